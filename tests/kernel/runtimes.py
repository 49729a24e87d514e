"""Real container runtimes for the kernel tests: Debian's Docker and Podman, confined.

dockerd runs with its own data root, exec root and socket, `--iptables=false
--ip-forward=false --bridge=none`, and puts every container below the test's own cgroup;
Podman gets its own storage root and the same cgroup parent. Containers use the host
network (traffic stays on 127.0.0.0/8). The image is made here without a registry: a
busybox-static rootfs with tests/kernel/netprobe.c built static, piped into `import`.
`close()` removes the containers, the image, the daemon, its directories and every
cgroup the runtime made below the test's parent, in the v1 hierarchies too.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid

from monitor.cgroups import cgroup2_mount

IMAGE = "crossedge-probe:1"
BUSYBOX = "/bin/busybox"


def image_tar(netprobe: str, extra: dict[str, str | bytes] | None = None) -> bytes:
    """A minimal rootfs: busybox (sh) and netprobe; `extra` adds files (path in the image ->
    a host file to copy, or the bytes), with the directories /tmp, /opt and /etc."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(BUSYBOX, "bin/busybox")
        tar.add(netprobe, "bin/netprobe")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
        for name, mode in (("tmp", 0o1777), ("opt", 0o755), ("etc", 0o755)) if extra else ():
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for name, source in (extra or {}).items():
            if isinstance(source, bytes):
                info = tarfile.TarInfo(name.lstrip("/"))
                info.size, info.mode = len(source), 0o644
                tar.addfile(info, io.BytesIO(source))
            else:
                tar.add(source, name.lstrip("/"))
    return buf.getvalue()


def cgroup_mounts() -> list[str]:
    with open("/proc/mounts") as fh:
        return [f[1] for f in (line.split() for line in fh) if len(f) > 2 and f[2] in ("cgroup", "cgroup2")]


def remove_cgroups(parent: str) -> None:
    """rmdir `parent` (relative) and everything below it, in every cgroup hierarchy."""
    for mount in cgroup_mounts():
        top = os.path.join(mount, parent.strip("/"))
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            for _ in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)  # a container's last process is still leaving


class Runtime:
    name = ""
    data_root = ""
    base: list[str] = []  # the CLI and its options

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 60, check=True):
        return subprocess.run([*self.base, *args], input=input, capture_output=True, timeout=timeout, check=check)

    def run(self, name: str, argv: list[str], timeout: float = 60, options=()) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Docker(Runtime):
    name = "docker"

    def __init__(self, cgroup_parent: str, tar: bytes):
        tag = uuid.uuid4().hex[:8]
        self.data_root = f"/var/lib/crossedge-test-docker-{tag}"
        self.exec_root = f"/run/crossedge-test-docker-{tag}"
        self.sock = f"/run/crossedge-test-docker-{tag}.sock"
        self.cgroup_parent = f"/{cgroup_parent.strip('/')}/docker"
        self.base = [shutil.which("docker"), "-H", f"unix://{self.sock}"]
        self.log = open(f"/tmp/crossedge-test-dockerd-{tag}.log", "wb")  # noqa: SIM115
        argv = [
            "dockerd", "--iptables=false", "--ip-forward=false", "--bridge=none", "--ip-masq=false",
            "--data-root", self.data_root, "--exec-root", self.exec_root, "-H", f"unix://{self.sock}",
            "--pidfile", f"{self.exec_root}.pid", "--cgroup-parent", self.cgroup_parent,
            "--exec-opt", "native.cgroupdriver=cgroupfs",
        ]  # fmt: skip
        self.daemon = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
            self.cli("import", "-", IMAGE, input=tar)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self.daemon.returncode}); see {self.log.name}")
            if self.cli("version", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"dockerd did not answer within 30 s; see {self.log.name}")

    def run(self, name, argv, timeout=60, options=()):
        return self.cli("run", "--rm", "--network", "host", "--name", name, *options, IMAGE, *argv, timeout=timeout,
                        check=False)  # fmt: skip

    def close(self) -> None:
        if self.daemon.poll() is None:
            with contextlib.suppress(Exception):
                ids = self.cli("ps", "-aq", check=False, timeout=30).stdout.split()
                if ids:
                    self.cli("rm", "-f", *[i.decode() for i in ids], check=False, timeout=60)
                self.cli("rmi", "-f", IMAGE, check=False, timeout=60)
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.log.close()
        _unmount_below(self.data_root)
        _unmount_below(self.exec_root)
        shutil.rmtree(self.data_root, ignore_errors=True)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock)
        os.unlink(self.log.name)


class Podman(Runtime):
    name = "podman"

    def __init__(self, cgroup_parent: str, tar: bytes):
        tag = uuid.uuid4().hex[:8]
        self.data_root = f"/var/lib/crossedge-test-podman-{tag}"
        self.run_root = f"/run/crossedge-test-podman-{tag}"
        self.cgroup_parent = f"/{cgroup_parent.strip('/')}/podman"
        # crun refuses hybrid cgroup hosts (v1 controllers with cgroup2 beside them); runc does not
        self.base = [
            shutil.which("podman"), "--root", self.data_root, "--runroot", self.run_root,
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", shutil.which("runc"),
        ]  # fmt: skip
        try:
            self.cli("import", "-", IMAGE, input=tar)
        except BaseException:
            self.close()
            raise

    def run(self, name, argv, timeout=60, options=()):
        return self.cli(
            "run", "--rm", "--network", "host", "--cgroup-parent", self.cgroup_parent, "--name", name,
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", *options, f"localhost/{IMAGE}", *argv,
            timeout=timeout, check=False,
        )  # fmt: skip

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cli("rm", "-af", check=False, timeout=60)
            self.cli("rmi", "-af", check=False, timeout=60)
        _unmount_below(self.data_root)
        _unmount_below(self.run_root)
        shutil.rmtree(self.data_root, ignore_errors=True)
        shutil.rmtree(self.run_root, ignore_errors=True)


def _unmount_below(root: str) -> None:
    """Mounts a runtime left under its own directories (overlay, shm), deepest first."""
    with open("/proc/mounts") as fh:
        points = [line.split()[1] for line in fh if line.split()[1].startswith(root.rstrip("/") + "/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def available(kind: str) -> str | None:
    """Why this runtime cannot run here, or None."""
    need = {"docker": ("dockerd", "docker", "runc"), "podman": ("podman", "runc")}[kind]
    missing = [tool for tool in (*need, "clang") if shutil.which(tool) is None]
    if missing or not os.path.exists(BUSYBOX):
        return f"missing {', '.join(missing) or BUSYBOX} (make test installs docker.io, podman, busybox-static)"
    try:
        cgroup2_mount()
    except RuntimeError as exc:
        return str(exc)
    return None
