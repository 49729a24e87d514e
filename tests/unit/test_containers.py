"""cgroup path -> container, by each runtime's naming convention."""

import json

from monitor import containers
from monitor.cgroups import CgroupIndex, cgroup2_mount
from monitor.containers import identify, is_container_cgroup

CID = "ab" * 32
POD = "0d5a8a3e-1f2b-4c3d-9e8f-7a6b5c4d3e2f"


def test_docker_systemd_and_cgroupfs_drivers():
    ref = identify(f"/system.slice/docker-{CID}.scope", ())
    assert (ref.runtime, ref.container_id, ref.name) == ("docker", CID, CID[:12])
    assert identify(f"/docker/{CID}", ()).runtime == "docker"


def test_containerd_crio_podman():
    assert identify(f"/system.slice/cri-containerd-{CID}.scope", ()).runtime == "containerd"
    assert identify(f"/machine.slice/libpod-{CID}.scope", ()).runtime == "podman"
    assert identify(f"/crio-{CID}.scope", ()).runtime == "cri-o"


def test_kubepods_both_drivers():
    pod_slice = f"kubepods-burstable-pod{POD.replace('-', '_')}.slice"
    systemd = f"/kubepods.slice/kubepods-burstable.slice/{pod_slice}/cri-containerd-{CID}.scope"
    ref = identify(systemd, ())
    assert (ref.runtime, ref.pod_uid) == ("containerd", POD)
    ref = identify(f"/kubepods/burstable/pod{POD}/{CID}", ())
    assert (ref.runtime, ref.container_id, ref.pod_uid) == ("kubepods", CID, POD)


def test_host_paths_are_not_containers():
    for path in ("/", "/system.slice/ssh.service", "/user.slice/user-0.slice/session-1.scope", "", None):
        assert identify(path, ()) is None


def test_nested_cgroup_inside_a_container_belongs_to_it():
    assert identify(f"/system.slice/docker-{CID}.scope/init", ()).container_id == CID


def test_docker_metadata_gives_the_name(tmp_path, monkeypatch):
    meta = tmp_path / "containers" / CID
    meta.mkdir(parents=True)
    ref = identify(f"/system.slice/docker-{CID}.scope", (str(tmp_path),))
    assert ref.name == CID[:12]  # no metadata yet: short id
    (meta / "config.v2.json").write_text(json.dumps({"Name": "/edge-app-prod"}))
    # a miss is remembered for MISS_TTL (no file reads on every event of such a container)...
    assert identify(f"/system.slice/docker-{CID}.scope", (str(tmp_path),)).name == CID[:12]
    monkeypatch.setattr(containers, "MISS_TTL", 0.0)  # ...then looked up again
    assert identify(f"/system.slice/docker-{CID}.scope", ("/nonexistent", str(tmp_path))).name == "edge-app-prod"


def test_cgroup2_mount_from_proc_mounts(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    assert cgroup2_mount(str(mounts)) == "/sys/fs/cgroup/unified"


def test_index_finds_new_directories_on_a_miss(tmp_path):
    (tmp_path / "a").mkdir()
    index = CgroupIndex(str(tmp_path), rescan_interval=0)
    assert index.path((tmp_path / "a").stat().st_ino) == "/a"
    (tmp_path / "a" / "b").mkdir()
    assert index.path((tmp_path / "a" / "b").stat().st_ino) == "/a/b"
    assert index.path(tmp_path.stat().st_ino) == "/"
    assert index.path(1) is None  # an unknown id is None, not an error


def test_a_new_cgroups_first_event_is_attributed_and_misses_are_not_rewalked(tmp_path):
    index = CgroupIndex(str(tmp_path), rescan_interval=60)
    assert index.path(tmp_path.stat().st_ino) == "/"
    (tmp_path / "new").mkdir()  # created right after a walk: still found at once
    assert index.path((tmp_path / "new").stat().st_ino) == "/new"
    scans = index.scans
    for _ in range(100):  # a storm from an id that no walk finds costs one walk
        assert index.path(999_999_999) is None
    assert index.scans == scans + 1


def test_docker_metadata_gives_image_and_labels_and_outlives_the_container(tmp_path):
    cid = "c1" * 32
    meta = tmp_path / "containers" / cid
    meta.mkdir(parents=True)
    labels = {"io.kubernetes.pod.name": "shop-0", "io.kubernetes.pod.namespace": "prod", "app": "shop"}
    doc = {"Name": "/shop", "Config": {"Image": "registry.local/shop:1.2", "Labels": labels}}
    (meta / "config.v2.json").write_text(json.dumps(doc))
    ref = identify(f"/crossedge-x/docker/{cid}", (str(tmp_path),), ())
    assert (ref.runtime, ref.name, ref.image, dict(ref.labels)) == ("docker", "shop", "registry.local/shop:1.2", labels)
    (meta / "config.v2.json").unlink()  # `docker run --rm`: its metadata goes when it exits
    assert identify(f"/crossedge-x/docker/{cid}", (str(tmp_path),), ()).image == "registry.local/shop:1.2"
    assert ref.as_event()["labels"] == labels


def test_podman_storage_index_gives_name_and_image_in_both_cgroup_forms(tmp_path):
    cid = "d2" * 32
    index = tmp_path / "overlay-containers"
    index.mkdir()
    extra = {"image-name": "localhost/crossedge-probe:1", "name": "pweb"}
    item = {"id": cid, "names": ["pweb"], "image": "e3" * 32, "metadata": json.dumps(extra)}
    (index / "containers.json").write_text(json.dumps([{"id": "garbage"}, "not an object", item]))
    for path in (f"/machine.slice/libpod-{cid}.scope", f"/crossedge-x/podman/libpod-{cid}"):
        ref = identify(path, (), (str(tmp_path),))
        assert (ref.runtime, ref.container_id, ref.name, ref.image) == ("podman", cid, "pweb", extra["image-name"])
    assert identify(f"/machine.slice/libpod-conmon-{cid}.scope", (), (str(tmp_path),)) is None


def test_a_plain_id_below_any_parent_is_a_container():
    """containerd's cgroupfs form is /<namespace>/<id>; Docker's with --cgroup-parent, <parent>/<id>."""
    cid = "f4" * 32
    assert identify(f"/k8s.io/{cid}", (), ()).runtime == "containerd"
    assert is_container_cgroup(f"/k8s.io/{cid}") and not is_container_cgroup(f"/{cid}")


def test_a_cgroup_named_like_another_container_inside_one_is_still_that_one(tmp_path):
    """Identity comes from where the runtime put the container: a tenant who makes
    `docker-<victim id>.scope` inside its own container claims nothing (issue 16)."""
    tenant, victim = "a1" * 32, "b2" * 32
    for cid, name in ((tenant, "tenant"), (victim, "victim")):
        (tmp_path / "containers" / cid).mkdir(parents=True)
        (tmp_path / "containers" / cid / "config.v2.json").write_text(json.dumps({"Name": f"/{name}"}))
    ref = identify(f"/system.slice/docker-{tenant}.scope/docker-{victim}.scope", (str(tmp_path),), ())
    assert (ref.container_id, ref.name) == (tenant, "tenant")
    assert identify(f"/docker/{tenant}/{victim}", (str(tmp_path),), ()).name == "tenant"
