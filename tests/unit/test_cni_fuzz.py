"""The CNI plugin's inputs, fuzzed (hypothesis): whatever a runtime sends as environment and
configuration, reading it and making it into options ends in a value or in a CNI error with
one of the spec's codes, never another exception; and the error object is what goes to stdout.
Everything before the first kernel call is covered; nothing here touches the host."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fireroute import request
from fireroute.cni import plugin, protocol
from fireroute.errors import NotFound, UsageError

CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51}

json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
keys = st.sampled_from(
    [*protocol.PLUGIN_KEYS, "cniVersion", "name", "type", "dns", "prevResult", "ipam", "bogus"]
)
prev_results = st.fixed_dictionaries(
    {},
    optional={
        "interfaces": st.lists(st.dictionaries(st.sampled_from(["name", "sandbox"]), json_value)),
        "ips": st.lists(
            st.fixed_dictionaries({}, optional={"interface": json_value, "address": json_value})
        ),
    },
)
config = st.dictionaries(keys, json_value, max_size=8)
env_text = st.text(max_size=20) | st.sampled_from(["veth0", "abc123", "/run/netns/x", "-x", ""])
env = st.fixed_dictionaries(
    {"CNI_COMMAND": st.sampled_from([*protocol.COMMANDS, "", "FROB"])},
    optional={
        "CNI_CONTAINERID": env_text,
        "CNI_NETNS": env_text,
        "CNI_IFNAME": env_text,
        "CNI_ARGS": env_text,
        "CNI_PATH": env_text,
    },
)


def read(env: dict, stdin: bytes) -> None:
    """What the plugin does before it asks the host for anything."""
    req = protocol.Request(env, stdin)
    if req.command == "ADD":
        with contextlib.suppress(UsageError):  # the plugin answers it as code 7
            request.options(plugin._fields(req))
        protocol.prev_result(req.config)


@settings(max_examples=400, deadline=None)
@given(
    env,
    config,
    st.sampled_from(["1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.2.0", 3, None]),
    st.none() | prev_results | json_value,
)
def test_any_request_is_read_or_refused_with_a_spec_code(e, conf, version, prev):
    conf = {"name": "fc", "type": "fireroute", **conf}
    if prev is not None:
        conf["prevResult"] = prev
    if version is not None:
        conf["cniVersion"] = version
    try:
        read(e, json.dumps(conf).encode())
    except protocol.CniError as exc:
        assert exc.code in CODES and exc.msg


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_on_stdin_are_read_or_refused(data):
    try:
        read({"CNI_COMMAND": "VERSION"}, data)
    except protocol.CniError as exc:
        assert exc.code in (protocol.DECODE, protocol.INCOMPATIBLE, protocol.BAD_CONFIG)


def test_a_refusal_is_one_error_object_on_stdout(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    rc = plugin.main({"CNI_COMMAND": "ADD"}, b'{"cniVersion": "1.0.0"}')
    doc = json.loads(out.getvalue())
    assert rc == 1 and doc["code"] == protocol.BAD_ENV and "CNI_CONTAINERID" in doc["details"]
    out.truncate(0), out.seek(0)
    assert plugin.main({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.0.0"}') == 0
    assert json.loads(out.getvalue())["supportedVersions"][-1] == "1.1.0"  # positive control


# -- the plugin's entry, in-process: every request answered, never an exception ----------------
class FakeHost:
    """The API as the plugin uses it, without the kernel: ``up`` checks the fields exactly as
    the real one does before it changes anything (request.options, the model's checks) and
    answers a VM on a fixed /30; nothing is ever up, so DEL and GC find nothing."""

    def __init__(self, *_a: object, **_k: object) -> None:
        pass

    def up(self, name: str, *, skip_conflicts: bool = False, **fields: object):
        from ipaddress import IPv4Network

        from fireroute import api, model

        options = request.options(fields)
        net = IPv4Network("10.200.0.0/30")
        return api.Vm(model.Vm(name, net, "frcfuzz", "06:00:0a:c8:00:02", "eth0", options))

    def get(self, name: str):
        raise NotFound(f'no vm "{name}"')

    def down(self, *names: str) -> list[str]:
        return []

    def list(self) -> list:
        return []

    def check(self, *names: str) -> dict:
        return {"ok": True, "vms": {}}


def ipam_answer(req, env, stdin, command, **extra):
    if command == "ADD":
        return {"ips": [{"address": "10.201.0.5/24", "gateway": "10.201.0.1"}]}
    return {}


def answer(env: dict, stdin: bytes) -> tuple[int, dict]:
    """plugin.main's exit code and the one JSON document it printed (or {})."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdout", out)
        # as in the plugin's own process, where json is never imported (_json reports some
        # errors through json.decoder's class, looked up among the modules imported)
        mp.delitem(sys.modules, "json.decoder", raising=False)
        mp.setattr("fireroute.api.Host", FakeHost)
        mp.setattr("fireroute.cni.ipam.call", ipam_answer)
        mp.setattr("fireroute.kernel.run.which", lambda tool: f"/usr/sbin/{tool}")
        mp.setattr("fireroute.kernel.observe.probe", lambda *a, **k: None)
        rc = plugin.main(env, stdin)
    text = out.getvalue()
    assert text.count("\n") <= 1, text  # one document at most
    return rc, (json.loads(text) if text.strip() else {})


def well_formed(rc: int, doc: dict) -> None:
    if rc == 0:
        assert "code" not in doc
        return
    assert rc == 1 and set(doc) <= {"cniVersion", "code", "msg", "details"}, doc
    assert doc["code"] in CODES | {100, 101, 102, 103}, doc
    assert isinstance(doc["msg"], str) and doc["msg"], doc
    assert isinstance(doc.get("details", ""), str) and isinstance(doc["cniVersion"], str)


GOOD_VALUES = {  # a value of the right type (and mostly a good one) for each key read
    "pool": st.sampled_from(["10.9.0.0/16", "172.31.0.0/24", "nope"]),
    "blockSize": st.integers(20, 32),
    "uplink": st.sampled_from(["eth0", "x" * 16]),
    "backend": st.sampled_from(["nft", "iptables", "ebpf"]),
    "table": st.sampled_from(["firecracker", "fr_test"]),
    "allowPeers": st.booleans(),
    "allowMetadata": st.booleans(),
    "allowHostPorts": st.lists(st.sampled_from(["53/udp", "22/tcp", "70000/tcp"]), max_size=2),
    "state": st.just("/nonexistent/fuzz/state.db"),
    "mtu": st.integers(0, 70000),
    "tapName": st.sampled_from(["tap0", "tap1", "veth0", ""]),
    "dns": st.fixed_dictionaries(
        {}, optional={"nameservers": st.lists(st.sampled_from(["192.0.2.53", "::1"]))}
    ),
    "ipam": st.fixed_dictionaries({"type": st.sampled_from(["host-local", "../x"])}),
    "capabilities": st.dictionaries(st.sampled_from(["portMappings", "mac"]), st.booleans()),
    "runtimeConfig": st.fixed_dictionaries(
        {},
        optional={
            "portMappings": st.lists(
                st.fixed_dictionaries(
                    {"hostPort": st.integers(0, 70000), "containerPort": st.integers(1, 80)},
                    optional={
                        "protocol": st.sampled_from(["tcp", "UDP", "sctp"]),
                        "hostIP": st.sampled_from(["", "127.0.0.1", "::", "127.0.0.1:5"]),
                    },
                ),
                max_size=2,
            )
        },
    ),
    "prevResult": prev_results,
    "cni.dev/valid-attachments": st.lists(
        st.fixed_dictionaries(
            {"containerID": st.sampled_from(["abc123", ""]), "ifname": st.just("veth0")}
        ),
        max_size=2,
    ),
    "disableCheck": st.booleans(),
    "args": st.just({"cni": {}}),
}


def text_of(value: object) -> str:
    return json.dumps(value)


scalar_text = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
).map(text_of) | st.sampled_from(
    ["1e999", "-0", "1" * 400, '"' + "x" * 5000 + '"', "NaN", "Infinity", '"\\ud800"', "01"]
)
json_text = st.recursive(
    scalar_text,
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
        | st.lists(
            st.tuples(st.sampled_from(["a", "ips", "address", "name"]), inner), max_size=4
        ).map(lambda kv: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in kv) + "}")
    ),
    max_leaves=10,
)
deep = st.integers(1, 3000).flatmap(
    lambda n: st.sampled_from(["[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, "[" * n])
)
KNOWN = sorted({k.rstrip("!") for k in protocol.CONFIG})
pair = st.one_of(
    st.sampled_from(sorted(GOOD_VALUES)).flatmap(
        lambda k: GOOD_VALUES[k].map(lambda v, k=k: (k, text_of(v)))
    ),
    st.tuples(st.sampled_from([*KNOWN, "bogus"]), json_text),  # any value: wrong types too
    st.tuples(st.sampled_from(KNOWN), deep),  # nesting
)


@st.composite
def stdin_texts(draw) -> bytes:
    """A configuration as text: the required keys (mostly), then pairs of known keys with
    right or wrong values, a key given twice now and then (the last one counts, as in Go)."""
    pairs = [("cniVersion", text_of(draw(st.sampled_from(["1.1.0", "1.0.0", "0.4.0"]))))]
    if draw(st.integers(0, 9)):
        pairs += [("name", '"fcnet"'), ("type", '"fireroute"')]
    pairs += draw(st.lists(pair, max_size=6))
    if draw(st.booleans()) and len(pairs) > 1:
        pairs.append(draw(st.sampled_from(pairs)))  # a duplicate key
    body = "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"
    return body.encode("utf-8", "surrogatepass")


ENVS = {
    command: {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "abc123",
        "CNI_IFNAME": "veth0",
        "CNI_NETNS": "/run/netns/fuzz",
        "CNI_PATH": "/nonexistent/cni",
    }  # fmt: skip
    for command in protocol.COMMANDS
}


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(ENVS)), stdin_texts())
def test_the_entry_answers_any_configuration_with_a_result_or_an_error_object(command, stdin):
    rc, doc = answer(ENVS[command], stdin)
    well_formed(rc, doc)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(ENVS)), st.binary(max_size=200) | deep.map(str.encode))
def test_the_entry_answers_any_bytes_with_a_result_or_an_error_object(command, stdin):
    rc, doc = answer(ENVS[command], stdin)
    well_formed(rc, doc)


def test_the_entry_fakes_nothing_it_should_refuse():
    """The positive and negative controls of the two tests above: a well-formed ADD through
    the same fake answers a result; the issue's bad fields answer code 7 naming them."""
    conf = {"cniVersion": "1.1.0", "name": "fcnet", "type": "fireroute"}
    rc, doc = answer(ENVS["ADD"], json.dumps(conf).encode())
    assert rc == 0 and doc["ips"][-1]["address"] == "10.200.0.2/30", doc
    ipam = {**conf, "ipam": {"type": "host-local"}}
    rc, doc = answer(ENVS["ADD"], json.dumps(ipam).encode())
    assert rc == 0 and doc["ips"][-1]["address"] == "10.201.0.5/24", doc
    for key, value in [
        ("blockSize", "/30"),
        ("prevResult", {"ips": [{"address": 5}]}),
        (
            "runtimeConfig",
            {"portMappings": [{"hostPort": 1, "containerPort": 2, "hostIP": "127.0.0.1:5"}]},
        ),  # fmt: skip
    ]:
        rc, doc = answer(ENVS["ADD"], json.dumps({**conf, key: value}).encode())
        assert rc == 1 and doc["code"] == 7 and key in doc["details"], doc
    valid = {**conf, "cni.dev/valid-attachments": [{"containerID": "abc123"}]}
    rc, doc = answer(ENVS["GC"], json.dumps(valid).encode())
    assert rc == 1 and doc["code"] == 7 and "ifname" in doc["details"], doc
    rc, doc = answer(ENVS["ADD"], b"[" * 100_000)
    assert rc == 1 and doc["code"] == 7, doc
    dup = b'{"cniVersion": "1.1.0", "name": "fcnet", "type": "fireroute", "mtu": "x", "mtu": 1400}'
    assert answer(ENVS["ADD"], dup)[0] == 0  # a key twice: the last one counts, as in Go
