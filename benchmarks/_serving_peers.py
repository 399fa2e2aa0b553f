"""Peers for benchmarks/serving.py: the raw asyncio baseline server, and MLServer's model settings.

The baseline is the floor any V2 runtime pays: an ``asyncio.Protocol`` that splits keep-alive HTTP/1.1
requests by hand, ``json.loads`` the V2 body, calls ``predict`` on the array and ``json.dumps`` the answer.
No routing, no validation, no metrics, no logging.

    python benchmarks/_serving_peers.py raw --model MODEL.joblib --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import numpy as np


class RawV2(asyncio.Protocol):
    def __init__(self, model: Any) -> None:
        self.model = model
        self.buf = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.transport.write(self.answer(head, body))

    def answer(self, head: str, body: bytes) -> bytes:
        if not head.startswith("post"):
            out = b'{"ready":true}'
        else:
            doc = json.loads(body)
            t = doc["inputs"][0]
            x = np.asarray(t["data"], dtype=np.float64).reshape(t["shape"])
            y = self.model.predict(x)
            out = json.dumps(
                {
                    "model_name": "m",
                    "id": doc.get("id", ""),
                    "outputs": [
                        {"name": "predict", "shape": list(y.shape), "datatype": "INT64", "data": y.tolist()}
                    ],
                }
            ).encode()
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
            len(out),
            out,
        )


async def _raw(model_path: str, host: str, port: int) -> None:
    import warnings

    import joblib

    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    model = joblib.load(model_path)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RawV2(model), host, port, backlog=2048)
    async with server:
        await server.serve_forever()


def mlserver_settings(model_dir: str, model_file: str, http_port: int, grpc_port: int) -> dict[str, Any]:
    """MLServer 1.7.1's best configuration measured here: adaptive batching, no worker pool."""
    return {
        "settings": {
            "http_port": http_port,
            "grpc_port": grpc_port,
            "host": "127.0.0.1",
            "parallel_workers": 0,  # >= 1 crashes the worker with pip's uvloop (see TOOLCHAIN.md)
            "metrics_port": 0,
            "debug": False,
        },
        "model": {
            "name": "bench",
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": model_file},
            "max_batch_size": 16,
            "max_batch_time": 0.002,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["raw"])
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    asyncio.run(_raw(a.model, a.host, a.port))


if __name__ == "__main__":
    main()
