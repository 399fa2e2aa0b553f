#!/usr/bin/env python3
"""A real single-node Kubernetes cluster on this machine, for the tests and for trying the cluster targets.

    cluster.py up       build (once, cached by version) and start: etcd, kube-apiserver, controller-manager,
                        scheduler, containerd + runc + CNI bridge, kubelet, kube-proxy; wait for the node to
                        be Ready; write .cluster/kubeconfig
    cluster.py images   (re)build the runtime and pause images and import them into the cluster's containerd
    cluster.py status   one line: up or down, and why
    cluster.py down     stop every process, remove every mount, network namespace, interface, iptables rule
                        and cgroup it made, and the cluster's state (the build cache stays)

Upstream binaries come from scripts/cluster/build-upstream.sh (the Go module proxy, pinned versions), images from
scripts/cluster/build-images.sh (built here, imported into containerd, never pulled). Standard library only, so
it runs before the project's venv exists. Needs root.

Every address stays on this machine: the control plane listens on loopback and on the cluster bridge's own
address; pods live on that bridge (a /24 of our own), Services in a /24 of our own that only kube-proxy's rules
know; a guard chain drops anything forwarded between the bridge and any other interface, so a pod reaches the
host and other pods, nothing else.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DIR = Path(os.environ.get("WOLT_CLUSTER_DIR", REPO / ".cluster")).resolve()
RUN = Path("/run/wolt-cluster")  # short paths: a unix socket path must stay under 108 bytes
CACHE = Path(os.environ.get("WOLT_CLUSTER_CACHE", Path.home() / ".cache/wolt-jupyter/cluster"))
K8S_VERSION = os.environ.get("K8S_VERSION", "v1.34.4")
ETCD_VERSION = os.environ.get("ETCD_VERSION", "v3.6.16")

NODE = "wolt-node"
BRIDGE = "wolt0"
NODE_IP = "10.233.0.1"  # the bridge's own address: the node, the API server, the host as pods see it
POD_CIDR = "10.233.0.0/24"
SERVICE_CIDR = "10.234.0.0/24"
API_SERVICE_IP = "10.234.0.1"  # the first address of the Service range: the `kubernetes` Service
API_PORT = 6443
ETCD_CLIENT = "127.0.0.1:12379"
ETCD_PEER = "127.0.0.1:12380"
GUARD = "WOLT-CLUSTER-GUARD"
SANDBOX_IMAGE = "localhost/wolt-pause:1.0"

PKI = DIR / "pki"
LOGS = DIR / "logs"
PIDS = DIR / "pids"
KUBECONFIG = DIR / "kubeconfig"
SOCK = RUN / "containerd.sock"

# start order; stop in reverse
COMPONENTS = [
    "etcd",
    "containerd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubelet",
]


def log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*args: str, check: bool = True, quiet: bool = False, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    out = subprocess.run(list(args), text=True, **kw)
    if check and out.returncode:
        raise SystemExit(f"cluster: {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    if not quiet and out.returncode and not check:
        pass
    return out


def k8s_bin(name: str) -> str:
    return str(CACHE / f"kubernetes-{K8S_VERSION}" / "bin" / name)


def etcd_bin() -> str:
    return str(CACHE / f"etcd-{ETCD_VERSION}" / "bin" / "etcd")


# -- certificates ------------------------------------------------------------------------------------------------
def _openssl_cert(name: str, subject: str, *, sans: list[str] | None = None, client: bool = False) -> None:
    key, csr, crt = PKI / f"{name}.key", PKI / f"{name}.csr", PKI / f"{name}.crt"
    if crt.exists():
        return
    sh("openssl", "genrsa", "-out", str(key), "2048")
    sh("openssl", "req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    ext = PKI / f"{name}.ext"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
    lines.append(f"extendedKeyUsage={'clientAuth' if client else 'serverAuth,clientAuth'}")
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext.write_text("\n".join(lines) + "\n")
    sh(
        *(
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(PKI / "ca.crt"),
            "-CAkey",
            str(PKI / "ca.key"),
        ),
        *("-CAcreateserial", "-days", "3650", "-sha256", "-extfile", str(ext), "-out", str(crt)),
    )
    csr.unlink()
    ext.unlink()


def make_pki() -> None:
    PKI.mkdir(parents=True, exist_ok=True)
    os.chmod(PKI, 0o700)
    if not (PKI / "ca.crt").exists():
        sh("openssl", "genrsa", "-out", str(PKI / "ca.key"), "2048")
        sh(
            *("openssl", "req", "-x509", "-new", "-key", str(PKI / "ca.key"), "-days", "3650", "-sha256"),
            *("-subj", "/CN=wolt-cluster-ca", "-out", str(PKI / "ca.crt")),
        )
    sans = [
        *(f"IP:{ip}" for ip in (NODE_IP, API_SERVICE_IP, "127.0.0.1")),
        *(f"DNS:{d}" for d in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")),
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    _openssl_cert("apiserver", "/CN=kube-apiserver", sans=sans)
    _openssl_cert(
        "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", client=True
    )
    _openssl_cert("admin", "/O=system:masters/CN=wolt-admin", client=True)
    _openssl_cert("controller-manager", "/CN=system:kube-controller-manager", client=True)
    _openssl_cert("scheduler", "/CN=system:kube-scheduler", client=True)
    _openssl_cert("kube-proxy", "/CN=system:kube-proxy", client=True)
    _openssl_cert("kubelet-client", f"/O=system:nodes/CN=system:node:{NODE}", client=True)
    _openssl_cert("kubelet", f"/CN={NODE}", sans=[f"IP:{NODE_IP}", "IP:127.0.0.1", f"DNS:{NODE}"])
    if not (PKI / "sa.key").exists():
        sh("openssl", "genrsa", "-out", str(PKI / "sa.key"), "2048")
        sh("openssl", "rsa", "-in", str(PKI / "sa.key"), "-pubout", "-out", str(PKI / "sa.pub"))
    for p in PKI.iterdir():
        os.chmod(p, 0o600)


def write_kubeconfig(path: Path, user: str) -> None:
    def b64(name: str) -> str:
        return base64.b64encode((PKI / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "wolt",
                "cluster": {
                    "server": f"https://{NODE_IP}:{API_PORT}",
                    "certificate-authority-data": b64("ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(f"{user}.crt"),
                    "client-key-data": b64(f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "wolt", "context": {"cluster": "wolt", "user": user}}],
        "current-context": "wolt",
    }
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    os.chmod(path, 0o600)


# -- processes ---------------------------------------------------------------------------------------------------
def pid_of(name: str) -> int | None:
    """The component's pid while it runs (not a zombie, still the program we started), else None."""
    f = PIDS / f"{name}.pid"
    try:
        pid = int(f.read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if stat.rsplit(") ", 1)[1][:1] in ("Z", "X"):
        return None
    return pid if name.encode() in cmdline else None


def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    if pid_of(name):
        log(f"{name} already running")
        return
    LOGS.mkdir(parents=True, exist_ok=True)
    PIDS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # not in the caller's process group: a test run's Ctrl-C spares it
            env={**os.environ, **(env or {})},
            cwd=str(DIR),
        )
    (PIDS / f"{name}.pid").write_text(str(proc.pid))
    log(f"{name} started (pid {proc.pid}, log {LOGS / (name + '.log')})")


def stop(name: str, timeout: float = 10.0) -> None:
    pid = pid_of(name)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_of(name):
            time.sleep(0.1)
        if pid_of(name):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
    (PIDS / f"{name}.pid").unlink(missing_ok=True)


def tail(name: str, n: int = 25) -> str:
    try:
        return "\n".join((LOGS / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait(what: str, ok, timeout: float, component: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    missing = 0  # consecutive looks that did not find the component running
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except Exception as exc:
            last = exc
        if component:
            missing = 0 if pid_of(component) else missing + 1
            if missing >= 3:  # one miss can be a look at /proc while the process is still being set up
                raise SystemExit(f"cluster: {component} exited while waiting for {what}:\n{tail(component)}")
        time.sleep(0.25)
    detail = f"\n{tail(component)}" if component else ""
    raise SystemExit(f"cluster: timed out after {timeout:.0f} s waiting for {what} ({last}){detail}")


# -- the API, with the admin's client certificate ---------------------------------------------------------------
def _ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    return ctx


def api(path: str, method: str = "GET", body: dict | None = None, timeout: float = 5.0) -> dict:
    req = urllib.request.Request(
        f"https://{NODE_IP}:{API_PORT}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"} if body is not None else {},
    )
    with urllib.request.urlopen(req, context=_ssl(), timeout=timeout) as r:
        text = r.read().decode()
    return json.loads(text) if text.startswith("{") else {"text": text}


def node_ready() -> bool:
    node = api(f"/api/v1/nodes/{NODE}")
    conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    return conds.get("Ready") == "True"


# -- network -----------------------------------------------------------------------------------------------------
def sysctl(key: str, value: str) -> None:
    Path("/proc/sys/" + key.replace(".", "/")).write_text(value)


def network_up() -> None:
    if sh("ip", "link", "show", BRIDGE, check=False).returncode:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    addrs = sh("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
    if f"{NODE_IP}/" not in addrs:
        sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    sysctl("net.ipv4.ip_forward", "1")  # a pod's packet to a Service address is routed back onto the bridge
    sysctl("net.bridge.bridge-nf-call-iptables", "1")  # bridged pod-to-pod replies see kube-proxy's NAT
    # Nothing forwarded between the bridge and any other interface: pods reach the host and each other only.
    if sh("iptables", "-w", "-n", "-L", GUARD, check=False).returncode:
        sh("iptables", "-w", "-N", GUARD)
    sh("iptables", "-w", "-F", GUARD)
    sh("iptables", "-w", "-A", GUARD, "-i", BRIDGE, "-o", BRIDGE, "-j", "RETURN")
    sh("iptables", "-w", "-A", GUARD, "-i", BRIDGE, "-j", "DROP")
    sh("iptables", "-w", "-A", GUARD, "-o", BRIDGE, "-j", "DROP")
    if sh("iptables", "-w", "-C", "FORWARD", "-j", GUARD, check=False).returncode:
        sh("iptables", "-w", "-I", "FORWARD", "1", "-j", GUARD)
    cni = DIR / "cni"
    cni.mkdir(parents=True, exist_ok=True)
    (cni / "10-wolt.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "wolt",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        "ipMasq": False,  # nothing leaves this machine, so nothing to masquerade
                        "hairpinMode": True,  # a pod reaching itself through its Service
                        "ipam": {
                            "type": "host-local",
                            "ranges": [
                                [{"subnet": POD_CIDR, "gateway": NODE_IP, "rangeStart": "10.233.0.10"}]
                            ],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(DIR / "cni-ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=1,
        )
    )
    (DIR / "resolv.conf").write_text("# pods resolve no names: every address they need is given to them\n")


def network_down() -> None:
    # network namespaces of pods whose sandboxes were not torn down by the kubelet
    for ns in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = ns.split()[0] if ns.strip() else ""
        if name.startswith("cni-") and _netns_on_bridge(name):
            sh("ip", "netns", "delete", name, check=False)
    sh("ip", "link", "delete", BRIDGE, check=False)
    while not sh("iptables", "-w", "-D", "FORWARD", "-j", GUARD, check=False).returncode:
        pass
    sh("iptables", "-w", "-F", GUARD, check=False)
    sh("iptables", "-w", "-X", GUARD, check=False)
    if Path(k8s_bin("kube-proxy")).exists():
        sh(k8s_bin("kube-proxy"), "--cleanup", check=False)
    shutil.rmtree(DIR / "cni-ipam", ignore_errors=True)


def _netns_on_bridge(ns: str) -> bool:
    """A namespace the cluster's CNI made: its eth0 has an address in the pod range."""
    out = sh("ip", "netns", "exec", ns, "ip", "-o", "-4", "addr", check=False).stdout
    return POD_CIDR.rsplit(".", 2)[0] + "." in out or not out.strip()


# -- configuration files -----------------------------------------------------------------------------------------
def containerd_config() -> Path:
    RUN.mkdir(parents=True, exist_ok=True)
    path = DIR / "containerd.toml"
    path.write_text(
        f"""version = 2
root = "{DIR / "containerd"}"
state = "{RUN / "state"}"
[grpc]
  address = "{SOCK}"
[ttrpc]
  address = "{RUN / "containerd.sock.ttrpc"}"
[debug]
  level = "warn"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  enable_selinux = false
  disable_apparmor = true
  # this machine's root lacks CAP_SYS_RESOURCE: lowering a process's OOM score (the kubelet asks -998 for a
  # sandbox) is refused, so scores are clamped to containerd's own
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{RUN / "runc"}"
        BinaryName = "{os.environ.get("WOLT_CLUSTER_RUNC") or shutil.which("runc") or "/usr/sbin/runc"}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{DIR / "cni"}"
"""
    )
    return path


def _component_config(name: str, api_version: str, kind: str, fields: dict) -> Path:
    """A component's configuration file (JSON is YAML), written where its flags point."""
    path = DIR / f"{name}.yaml"
    path.write_text(json.dumps({"apiVersion": api_version, "kind": kind, **fields}, indent=1))
    return path


def kubelet_config() -> Path:
    config = {
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(PKI / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(PKI / "kubelet.crt"),
        "tlsPrivateKeyFile": str(PKI / "kubelet.key"),
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # this machine has cgroup v1; 1.34's kubelet still runs there when told
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{SOCK}",
        "podCIDR": POD_CIDR,
        "resolvConf": str(DIR / "resolv.conf"),
        "clusterDomain": "cluster.local",
        "podLogsDir": str(DIR / "pod-logs"),
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusReportFrequency": "10s",
        "maxPods": 60,
        "enableServer": True,
        "localStorageCapacityIsolation": True,
    }
    return _component_config("kubelet", "kubelet.config.k8s.io/v1beta1", "KubeletConfiguration", config)


def kube_proxy_config() -> Path:
    config = {
        "clientConnection": {"kubeconfig": str(DIR / "kube-proxy.kubeconfig")},
        "mode": "iptables",
        "hostnameOverride": NODE,
        "bindAddress": "127.0.0.1",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "conntrack": {"maxPerCore": 0},  # leave the host's conntrack table size alone
        "iptables": {"masqueradeAll": True, "syncPeriod": "10s", "minSyncPeriod": "0s"},
    }
    return _component_config(
        "kube-proxy", "kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration", config
    )


# -- images ------------------------------------------------------------------------------------------------------
def build_images() -> list[str]:
    """Run the image build (cached by content) and return the archives it names."""
    out = subprocess.run(
        ["bash", str(HERE / "build-images.sh")], text=True, stdout=subprocess.PIPE, stderr=None, check=False
    )
    sys.stdout.write(out.stdout)
    if out.returncode:
        raise SystemExit(f"cluster: scripts/cluster/build-images.sh failed ({out.returncode})")
    # "image-archive: NAME PATH" lines; the base image is only built on, never run
    lines = [line.split() for line in out.stdout.splitlines() if line.startswith("image-archive:")]
    return [words[-1] for words in lines if "wolt-debian-base" not in words[1]]


def import_images(archives: list[str]) -> None:
    for archive in archives:
        t = time.monotonic()
        sh("ctr", "--address", str(SOCK), "-n", "k8s.io", "images", "import", "--no-unpack", archive)
        log(f"imported {archive} in {time.monotonic() - t:.1f} s")


# -- up / down ---------------------------------------------------------------------------------------------------
def up(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise SystemExit("cluster: needs root (namespaces, mounts, iptables, cgroups)")
    t0 = time.monotonic()
    if not args.no_build:
        sh("bash", str(HERE / "build-upstream.sh"), capture_output=False)
    archives = build_images() if not args.no_images else []
    if not any(pid_of(c) for c in COMPONENTS) and (RUN.exists() or _bridge_exists()):
        # what an earlier cluster left when its processes were killed (a machine's session ended): stale pod
        # network namespaces on the bridge would collide with the addresses new pods get
        log("leftovers of an earlier cluster and none of its processes: clearing them first")
        _clear(keep_dir=False)
    DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(DIR, 0o700)
    RUN.mkdir(parents=True, exist_ok=True)
    (RUN / "dir").write_text(str(DIR))  # where this cluster's state is, for a `down` from another checkout
    make_pki()
    for user in ("admin", "controller-manager", "scheduler", "kube-proxy", "kubelet-client"):
        write_kubeconfig(DIR / f"{user}.kubeconfig", user)
    network_up()

    start(
        "etcd",
        [
            etcd_bin(),
            *("--name", "wolt", "--data-dir", str(DIR / "etcd")),
            *(
                "--listen-client-urls",
                f"http://{ETCD_CLIENT}",
                "--advertise-client-urls",
                f"http://{ETCD_CLIENT}",
            ),
            *(
                "--listen-peer-urls",
                f"http://{ETCD_PEER}",
                "--initial-advertise-peer-urls",
                f"http://{ETCD_PEER}",
            ),
            *(
                "--initial-cluster",
                f"wolt=http://{ETCD_PEER}",
                "--listen-metrics-urls",
                "http://127.0.0.1:12381",
            ),
            *("--log-level", "warn", "--quota-backend-bytes", str(2 << 30)),
            "--unsafe-no-fsync",  # a throwaway test cluster on a shared disk: fsync latency is all it would buy
        ],
    )
    containerd = containerd_config()
    start("containerd", ["containerd", "--config", str(containerd)])
    wait(
        "etcd",
        lambda: urllib.request.urlopen(f"http://{ETCD_CLIENT}/health", timeout=2).status == 200,
        30,
        "etcd",
    )
    wait(
        "containerd",
        lambda: sh("ctr", "--address", str(SOCK), "version", check=False).returncode == 0,
        30,
        "containerd",
    )
    import_images(archives)

    start(
        "kube-apiserver",
        [
            k8s_bin("kube-apiserver"),
            *(
                "--etcd-servers",
                f"http://{ETCD_CLIENT}",
                "--bind-address",
                NODE_IP,
                "--advertise-address",
                NODE_IP,
            ),
            *("--secure-port", str(API_PORT), "--service-cluster-ip-range", SERVICE_CIDR),
            *("--client-ca-file", str(PKI / "ca.crt")),
            *(
                "--tls-cert-file",
                str(PKI / "apiserver.crt"),
                "--tls-private-key-file",
                str(PKI / "apiserver.key"),
            ),
            *("--kubelet-client-certificate", str(PKI / "apiserver-kubelet-client.crt")),
            *("--kubelet-client-key", str(PKI / "apiserver-kubelet-client.key")),
            *("--service-account-issuer", "https://kubernetes.default.svc.cluster.local"),
            *("--service-account-key-file", str(PKI / "sa.pub")),
            *("--service-account-signing-key-file", str(PKI / "sa.key")),
            *("--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction"),
            *("--allow-privileged=true", "--profiling=false", "--v", "1"),
            *("--kubelet-preferred-address-types", "InternalIP"),
            *("--endpoint-reconciler-type", "lease"),
        ],
    )
    wait("the API server", lambda: api("/readyz").get("text") == "ok", 90, "kube-apiserver")
    start(
        "kube-controller-manager",
        [
            k8s_bin("kube-controller-manager"),
            *("--kubeconfig", str(DIR / "controller-manager.kubeconfig")),
            *("--authentication-kubeconfig", str(DIR / "controller-manager.kubeconfig")),
            *("--authorization-kubeconfig", str(DIR / "controller-manager.kubeconfig")),
            *("--bind-address", "127.0.0.1", "--leader-elect=false", "--use-service-account-credentials"),
            *(
                "--service-account-private-key-file",
                str(PKI / "sa.key"),
                "--root-ca-file",
                str(PKI / "ca.crt"),
            ),
            *(
                "--cluster-signing-cert-file",
                str(PKI / "ca.crt"),
                "--cluster-signing-key-file",
                str(PKI / "ca.key"),
            ),
            *("--service-cluster-ip-range", SERVICE_CIDR, "--v", "1"),
        ],
    )
    start(
        "kube-scheduler",
        [
            k8s_bin("kube-scheduler"),
            *("--kubeconfig", str(DIR / "scheduler.kubeconfig")),
            *("--authentication-kubeconfig", str(DIR / "scheduler.kubeconfig")),
            *("--authorization-kubeconfig", str(DIR / "scheduler.kubeconfig")),
            *("--bind-address", "127.0.0.1", "--leader-elect=false", "--v", "1"),
        ],
    )
    start("kube-proxy", [k8s_bin("kube-proxy"), "--config", str(kube_proxy_config()), "--v", "1"])
    (DIR / "kubelet").mkdir(exist_ok=True)
    (DIR / "pod-logs").mkdir(exist_ok=True)
    start(
        "kubelet",
        [
            k8s_bin("kubelet"),
            *("--config", str(kubelet_config()), "--kubeconfig", str(DIR / "kubelet-client.kubeconfig")),
            *("--root-dir", str(DIR / "kubelet"), "--hostname-override", NODE, "--node-ip", NODE_IP),
            "--v",
            "1",
        ],
    )
    wait(f"node {NODE} Ready", node_ready, 120, "kubelet")
    wait(
        "the default service account",
        lambda: api("/api/v1/namespaces/default/serviceaccounts/default").get("metadata"),
        60,
        "kube-controller-manager",
    )
    write_kubeconfig(KUBECONFIG, "admin")
    log(
        f"cluster up in {time.monotonic() - t0:.1f} s: Kubernetes {K8S_VERSION}, etcd {ETCD_VERSION}, node {NODE}"
    )
    print(f"export KUBECONFIG={KUBECONFIG}")


def _mounts_under(*roots: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if any(target == str(r) or target.startswith(str(r) + "/") for r in roots):
            out.append(target)
    return sorted(out, key=lambda p: p.count("/"), reverse=True)


def _containers_down() -> None:
    """Stop every container of the cluster's containerd: through the kubelet when it is alive, then by force."""
    if pid_of("kube-apiserver") and pid_of("kubelet"):
        try:
            for ns in api("/api/v1/namespaces").get("items", []):
                name = ns["metadata"]["name"]
                for pod in api(f"/api/v1/namespaces/{name}/pods").get("items", []):
                    api(
                        f"/api/v1/namespaces/{name}/pods/{pod['metadata']['name']}",
                        "DELETE",
                        {"gracePeriodSeconds": 0},
                    )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and api("/api/v1/pods").get("items"):
                time.sleep(0.5)
        except (OSError, urllib.error.URLError) as exc:
            log(f"deleting pods through the API failed: {exc}")
    stop("kubelet")
    if pid_of("containerd"):
        ctr = ["ctr", "--address", str(SOCK), "-n", "k8s.io"]
        for task in sh(*ctr, "tasks", "ls", "-q", check=False).stdout.split():
            sh(*ctr, "tasks", "kill", "-a", "-s", "SIGKILL", task, check=False)
        time.sleep(0.5)
        for task in sh(*ctr, "tasks", "ls", "-q", check=False).stdout.split():
            sh(*ctr, "tasks", "delete", "-f", task, check=False)
    # shims outlive containerd: end the ones serving this cluster's socket, and what they run
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and str(SOCK).encode() in b" ".join(cmd):
            with contextlib.suppress(OSError):
                os.killpg(int(proc.name), signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


def _cgroups_down() -> None:
    """The kubelet's pod cgroups (kubepods/...) in every v1 hierarchy, deepest first."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        root = hierarchy / "kubepods"
        if not root.is_dir():
            continue
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, root]:
            with contextlib.suppress(OSError):
                d.rmdir()


def _bridge_exists() -> bool:
    return sh("ip", "link", "show", BRIDGE, check=False).returncode == 0


def _clear(*, keep_dir: bool) -> None:
    """Stop everything, undo every mount, namespace, interface, rule and cgroup; remove the state dirs (the
    one this checkout uses, and the one RUN names, if another checkout made the cluster)."""
    dirs = [DIR]
    with contextlib.suppress(OSError):
        other = Path((RUN / "dir").read_text().strip())
        if other != DIR:
            dirs.append(other)
    _containers_down()
    for name in reversed(COMPONENTS):
        stop(name)
    for d in dirs[1:]:  # another checkout's cluster: its recorded processes
        for f in (d / "pids").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(f.read_text())
                if f.stem.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
    for target in _mounts_under(*dirs, RUN):
        sh("umount", "-l", target, check=False)
    network_down()
    _cgroups_down()
    left = _mounts_under(*dirs, RUN)
    if left:
        log(f"mounts still present: {left}")
    shutil.rmtree(RUN, ignore_errors=True)
    for d in dirs:
        if keep_dir and d == DIR:
            continue
        shutil.rmtree(d, ignore_errors=True)


def down(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise SystemExit("cluster: needs root")
    if not DIR.exists() and not RUN.exists() and not _bridge_exists():
        log("nothing to take down")
        return
    _clear(keep_dir=False)
    log("cluster down")


def status(args: argparse.Namespace) -> None:
    running = [c for c in COMPONENTS if pid_of(c)]
    if len(running) != len(COMPONENTS):
        print(f"down ({', '.join(running) or 'no component'} running)")
        raise SystemExit(1)
    try:
        ready = node_ready()
    except (OSError, urllib.error.URLError) as exc:
        print(f"down (API unreachable: {exc})")
        raise SystemExit(1) from None
    print(f"up (node {NODE} {'Ready' if ready else 'NotReady'}; KUBECONFIG={KUBECONFIG})")
    raise SystemExit(0 if ready else 1)


def images(args: argparse.Namespace) -> None:
    import_images(build_images())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--no-build", action="store_true", help="use the cached binaries as they are")
    u.add_argument("--no-images", action="store_true", help="do not build or import the images")
    u.set_defaults(fn=up)
    sub.add_parser("down").set_defaults(fn=down)
    sub.add_parser("status").set_defaults(fn=status)
    sub.add_parser("images").set_defaults(fn=images)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
