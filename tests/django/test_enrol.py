"""`manage.py enrol`: one name prints its token alone (scripts read it as it is); several
print `NAME TOKEN` lines, each token that node's own."""

import io

from django.core.management import call_command

from dashboard.fleet.models import Node


def enrol(*names) -> list[str]:
    out = io.StringIO()
    call_command("enrol", *names, stdout=out)
    return out.getvalue().split()


def test_one_name_prints_its_token_alone(db):
    [token] = enrol("edge-1")
    assert Node.authenticate(token).name == "edge-1"


def test_several_names_print_a_token_each(db):
    words = enrol("edge-a", "edge-b", "edge-c")
    pairs = dict(zip(words[::2], words[1::2], strict=True))
    assert list(pairs) == ["edge-a", "edge-b", "edge-c"]
    assert {name: Node.authenticate(token).name for name, token in pairs.items()} == {n: n for n in pairs}
    assert len(set(pairs.values())) == 3
