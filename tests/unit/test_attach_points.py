"""Where the programs attach: high enough that a container is observed from its first
connect(), never the cgroup root, never twice on one path."""

from monitor.kernel.enforcer import Enforcer, literal_prefix


def test_literal_prefix_stops_at_the_first_wildcard_component():
    assert literal_prefix("/crossedge-x.slice/*") == "/crossedge-x.slice"
    assert literal_prefix("/system.slice/docker-*.scope") == "/system.slice"
    assert literal_prefix("/a.slice/b.slice/docker-1.scope") == "/a.slice/b.slice/docker-1.scope"
    assert literal_prefix("*") == literal_prefix("/*") == literal_prefix("*/docker-*") == ""


def test_attach_points(tmp_path):
    (tmp_path / "crossedge-x.slice").mkdir()
    scoped = Enforcer(scope="/crossedge-x.slice/*", cgroup_root=str(tmp_path))
    assert scoped.attach_points([]) == ["/crossedge-x.slice"]  # before any container: the first is covered
    assert Enforcer(scope="/gone.slice/*", cgroup_root=str(tmp_path)).attach_points([]) == []

    anywhere = Enforcer(scope="*", cgroup_root=str(tmp_path))
    containers = [
        "/system.slice/docker-a.scope",
        "/system.slice/docker-b.scope",
        "/docker-top.scope",  # right below the root: the container itself, never the root
        "/kubepods.slice/pod1.slice/cri-containerd-c.scope",
        "/system.slice/docker-a.scope/inner/docker-d.scope",  # nested: already covered
    ]
    assert anywhere.attach_points(containers) == ["/docker-top.scope", "/kubepods.slice/pod1.slice", "/system.slice"]


def test_rules_apply_at_and_below_a_container_in_scope(tmp_path):
    enforcer = Enforcer(scope="/crossedge-x.slice/*", cgroup_root=str(tmp_path))
    a, b = f"docker-{'a' * 64}.scope", f"docker-{'b' * 64}.scope"
    assert enforcer.in_scope(f"/crossedge-x.slice/{a}")
    assert enforcer.in_scope(f"/crossedge-x.slice/{a}/init.scope")
    assert not enforcer.in_scope("/crossedge-x.slice")  # the attach point itself: observed only
    assert not enforcer.in_scope("/crossedge-x.slice/sshd.service")  # not a container
    assert not enforcer.in_scope(f"/other.slice/{b}") and not enforcer.in_scope(None)


def test_a_fresh_node_gets_the_runtime_parents_before_any_container(tmp_path, monkeypatch):
    """scope `*`, no container yet: the programs go where runtimes will put containers, and
    a cgroupfs runtime's parent is made first (it would make it with its first container)."""
    (tmp_path / "system.slice").mkdir()
    monkeypatch.setattr("shutil.which", lambda program: f"/usr/bin/{program}" if program == "dockerd" else None)
    fresh = Enforcer(scope="*", cgroup_root=str(tmp_path))
    assert fresh.make_runtime_parents() == ["/docker"] and (tmp_path / "docker").is_dir()
    assert fresh.attach_points([]) == ["/docker", "/system.slice"]
    assert fresh.make_runtime_parents() == []  # made once
    assert Enforcer(scope="/crossedge-x.slice/*", cgroup_root=str(tmp_path)).make_runtime_parents() == []
