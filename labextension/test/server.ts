/**
 * A real HTTP server on 127.0.0.1 for the tests: each route answers with a status and a body the test sets,
 * and every request is recorded (method, path, query, headers, body) so the test can check what was sent.
 */
import * as http from 'http';
import { AddressInfo } from 'net';

export interface IRecorded {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface IAnswer {
  status?: number;
  body?: unknown;
  /** Sent as is (not JSON-encoded) when set. */
  raw?: string;
  /** Held back until this promise resolves. */
  gate?: Promise<void>;
}

export class TestServer {
  readonly requests: IRecorded[] = [];
  readonly routes = new Map<string, IAnswer | ((r: IRecorded) => IAnswer)>();

  /** `"GET /wolt-jupyter/api/models"` → answer; unknown routes get 404 `{"error": "no route ..."}`. */
  on(route: string, answer: IAnswer | ((r: IRecorded) => IAnswer)): void {
    this.routes.set(route, answer);
  }

  async start(): Promise<string> {
    this._server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', c => chunks.push(c));
      req.on('end', async () => {
        const url = new URL(req.url ?? '/', 'http://127.0.0.1');
        const recorded: IRecorded = {
          method: req.method ?? '',
          path: url.pathname,
          query: url.searchParams,
          headers: req.headers,
          body: Buffer.concat(chunks).toString()
        };
        this.requests.push(recorded);
        const found = this.routes.get(`${recorded.method} ${recorded.path}`);
        const answer = typeof found === 'function' ? found(recorded) : found;
        const a = answer ?? { status: 404, body: { error: `no route ${recorded.method} ${recorded.path}` } };
        if (a.gate) {
          await a.gate;
        }
        const text = a.raw !== undefined ? a.raw : a.body === undefined ? '' : JSON.stringify(a.body);
        res.writeHead(a.status ?? 200, { 'Content-Type': 'application/json' });
        res.end(text);
      });
    });
    await new Promise<void>(resolve => this._server!.listen(0, '127.0.0.1', resolve));
    const { port } = this._server.address() as AddressInfo;
    return `http://127.0.0.1:${port}/`;
  }

  async stop(): Promise<void> {
    if (this._server) {
      this._server.closeAllConnections();
      await new Promise<void>(resolve => this._server!.close(() => resolve()));
    }
  }

  private _server: http.Server | null = null;
}

/** A port nothing listens on: bound, read, closed. */
export async function closedPortUrl(): Promise<string> {
  const s = http.createServer();
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>(resolve => s.close(() => resolve()));
  return `http://127.0.0.1:${port}/`;
}
