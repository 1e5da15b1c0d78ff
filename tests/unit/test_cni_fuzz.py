"""The CNI plugin's inputs, fuzzed (hypothesis): whatever a runtime sends as environment and
configuration, reading it and making it into options ends in a value or in a CNI error with
one of the spec's codes, never another exception; and the error object is what goes to stdout.
Everything before the first kernel call is covered; nothing here touches the host."""

from __future__ import annotations

import contextlib
import io
import json
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from fireroute import request
from fireroute.cni import plugin, protocol
from fireroute.errors import UsageError

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
