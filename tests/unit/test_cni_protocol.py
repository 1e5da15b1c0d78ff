"""The CNI protocol layer against the spec's text: requests read and refused with the spec's
error codes, results shaped per version."""

from __future__ import annotations

import json

import pytest

from fireroute.cni import protocol as p

CONF = {"cniVersion": "1.0.0", "name": "fc", "type": "fireroute"}
ADD = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "veth0", "CNI_PATH": "/opt/cni/bin"}  # fmt: skip


def req(env: dict, conf: object) -> p.Request:
    return p.Request(env, json.dumps(conf).encode() if not isinstance(conf, bytes) else conf)


def code(env: dict, conf: object) -> int:
    with pytest.raises(p.CniError) as e:
        req(env, conf)
    return e.value.code


def test_a_good_add_is_read():
    r = req(
        {**ADD, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web"}, {**CONF, "pool": "10.9.0.0/16"}
    )
    assert (r.command, r.container, r.netns, r.ifname) == ("ADD", "abc123", "/run/netns/x", "veth0")
    assert r.args == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web"} and r.version == "1.0.0"
    assert r.options() == {"pool": "10.9.0.0/16"}


@pytest.mark.parametrize(
    "env,conf,want",
    [
        ({**ADD, "CNI_COMMAND": "FROB"}, CONF, p.BAD_ENV),
        ({k: v for k, v in ADD.items() if k != "CNI_NETNS"}, CONF, p.BAD_ENV),
        ({**ADD, "CNI_CONTAINERID": "-bad"}, CONF, p.BAD_ENV),
        ({**ADD, "CNI_IFNAME": "x" * 16}, CONF, p.BAD_ENV),
        ({**ADD, "CNI_ARGS": "novalue"}, CONF, p.BAD_ENV),
        (ADD, b"{not json", p.DECODE),
        (ADD, [1], p.DECODE),
        (ADD, {**CONF, "cniVersion": "0.2.0"}, p.INCOMPATIBLE),
        ({**ADD, "CNI_COMMAND": "CHECK"}, {**CONF, "cniVersion": "0.3.1"}, p.INCOMPATIBLE),
        ({**ADD, "CNI_COMMAND": "GC"}, CONF, p.INCOMPATIBLE),  # GC is 1.1.0's
        (ADD, {**CONF, "frobnicate": 1}, p.UNSUPPORTED_FIELD),
        (ADD, {"cniVersion": "1.0.0", "type": "fireroute"}, p.BAD_CONFIG),
    ],
)
def test_bad_requests_get_the_specs_codes(env, conf, want):
    assert code(env, conf) == want
    good = {**CONF, "cniVersion": "1.1.0"}
    assert req(ADD, good).command == "ADD"  # the positive control beside each


def test_bad_option_values_are_invalid_config():
    r = req(ADD, {**CONF, "blockSize": 31})
    with pytest.raises(p.CniError) as e:
        r.options()
    assert e.value.code == p.BAD_CONFIG and "block size" in e.value.details
    assert req(ADD, {**CONF, "blockSize": 30}).options() == {"block_size": 30}


PREV = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "06:00:0a:00:00:02", "sandbox": "/run/netns/x"}],
    "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}],
    "dns": {"nameservers": ["10.0.0.1"]},
}
MAP = {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}
GOOD = {  # every key fireroute reads, each of the right type: read as it is
    **CONF,
    "cniVersions": ["1.0.0"],
    "args": {"cni": {"x": 1}},
    "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"},
    "dns": {"nameservers": ["192.0.2.53"], "domain": "d", "search": ["s"], "options": ["o"]},
    "prevResult": PREV,
    "runtimeConfig": {"portMappings": [MAP], "bandwidth": {"ingressRate": 1}},
    "capabilities": {"portMappings": True},
    "disableCheck": False,
    "disableGC": False,
    "pool": "10.9.0.0/16",
    "blockSize": 30,
    "uplink": "eth0",
    "backend": "nft",
    "table": "firecracker",
    "allowPeers": True,
    "allowMetadata": False,
    "allowHostPorts": ["53/udp"],
    "state": "/tmp/state.db",
    "mtu": 1400,
    "tapName": "tap1",
}


def with_(conf: dict, path: str, value: object) -> dict:
    """``conf`` with the field at ``path`` (dots and [n]) set to ``value`` (None: removed)."""
    out = json.loads(json.dumps(conf))
    *parents, last = path.replace("[", ".").replace("]", "").split(".")
    node = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = int(last) if isinstance(node, list) else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return out


@pytest.mark.parametrize(
    "path,value",
    [
        ("prevResult.ips[0].address", 5),  # issue 21, item 10
        ("prevResult.ips[0].address", "10.0.0.2"),  # no prefix length
        ("prevResult.ips[0].address", "nonsense/24"),
        ("prevResult.ips[0].gateway", ["10.0.0.1"]),
        ("prevResult.ips[0].interface", "0"),
        ("prevResult.ips[0].interface", -1),
        ("prevResult.ips[0].interface", True),
        ("prevResult.ips[0]", "10.0.0.2/24"),
        ("prevResult.ips", {"address": "10.0.0.2/24"}),  # a list given as an object
        ("prevResult.interfaces[0].name", 7),
        ("prevResult.interfaces[0].mtu", "1500"),
        ("prevResult.routes[0].dst", "default"),
        ("prevResult.dns.nameservers", "10.0.0.1"),
        ("prevResult", []),
        ("runtimeConfig.portMappings[0].hostIP", "127.0.0.1:5"),  # issue 21, item 10
        ("runtimeConfig.portMappings[0].hostIP", 2130706433),
        ("runtimeConfig.portMappings[0].hostPort", "8080"),
        ("runtimeConfig.portMappings[0].hostPort", 70000),
        ("runtimeConfig.portMappings[0].containerPort", 0),
        ("runtimeConfig.portMappings[0].protocol", "sctp"),
        ("runtimeConfig.portMappings", {"hostPort": 1}),
        ("runtimeConfig", "portMappings"),
        ("blockSize", "/30"),  # issue 21, item 10
        ("blockSize", 30.0),
        ("blockSize", True),
        ("mtu", "1400"),
        ("allowPeers", "true"),  # booleans given as strings
        ("allowMetadata", 1),
        ("disableCheck", "false"),
        ("disableGC", "no"),
        ("capabilities.portMappings", "true"),
        ("allowHostPorts", "53/udp"),
        ("allowHostPorts", {"53": "udp"}),  # a list given as an object
        ("allowHostPorts", [53]),
        ("pool", ["10.9.0.0/16"]),
        ("uplink", 0),
        ("backend", 1),
        ("table", {}),
        ("tapName", False),
        ("state", "relative/state.db"),
        ("dns", ["192.0.2.53"]),
        ("dns.nameservers", ["not-an-address"]),
        ("dns.domain", 3),
        ("dns.search", "s"),
        ("ipam", "host-local"),
        ("ipam.type", "../host-local"),
        ("ipam.type", None),
        ("args", []),
        ("cniVersions", "1.0.0"),
        ("name", ""),
        ("type", 1),
    ],
)
def test_every_field_read_is_type_checked_and_named(path, value):
    assert req(ADD, GOOD).config == GOOD  # the positive control: all of it, well-formed
    with pytest.raises(p.CniError) as e:
        req(ADD, with_(GOOD, path, value))
    assert e.value.code == p.BAD_CONFIG, e.value
    field = path.rsplit(".", 1)[0] if value is None else path
    assert f'"{field}' in e.value.details, e.value.details


def test_a_port_mapping_host_ip_is_kept_or_refused_never_skipped():
    r = req(ADD, GOOD)
    assert p.port_mappings(r.config) == ["127.0.0.1:8080:80/tcp"]
    v6 = with_(GOOD, "runtimeConfig.portMappings[0].hostIP", "::1")  # IPv6: left out, said
    assert p.port_mappings(req(ADD, v6).config) == []
    bad = with_(GOOD, "runtimeConfig.portMappings[0].hostIP", "127.0.0.1:5")
    with pytest.raises(p.CniError) as e:
        req(ADD, bad)
    assert "hostIP" in e.value.details and "127.0.0.1:5" in e.value.details


def test_prev_result_interface_index_is_within_its_interfaces():
    assert p.prev_result(req(ADD, GOOD).config)[1][0]["interface"] == 0
    r = req(ADD, with_(GOOD, "prevResult.ips[0].interface", 1))
    with pytest.raises(p.CniError) as e:
        p.prev_result(r.config)
    assert e.value.code == p.BAD_CONFIG and "prevResult.ips[0].interface" in e.value.details


def test_the_schema_covers_every_key_the_plugin_accepts():
    keys = {k.rstrip("!") for k in p.CONFIG}
    assert keys == set(p.STANDARD_KEYS) | set(p.PLUGIN_KEYS)


GC = {"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin"}
GC_CONF = {**CONF, "cniVersion": "1.1.0"}
VALID = [{"containerID": "abc", "ifname": "eth0"}]


@pytest.mark.parametrize(
    "valid,named",
    [
        (None, "GC needs"),  # the key missing
        ({"containerID": "abc", "ifname": "eth0"}, "must be a list"),
        (["abc"], '[0]" must be an object'),
        ([{"containerID": "abc"}], '[0].ifname" is required'),
        ([{"ifname": "eth0"}], '[0].containerID" is required'),
        ([{"containerID": 5, "ifname": "eth0"}], '[0].containerID" must be'),
        ([{"containerID": "abc", "ifname": ["eth0"]}], '[0].ifname" must be'),
        ([*VALID, {"containerID": "", "ifname": "eth0"}], '[1].containerID" must be'),
    ],
)
def test_gc_needs_well_formed_valid_attachments(valid, named):
    key = "cni.dev/valid-attachments"
    assert req(GC, {**GC_CONF, key: VALID}).config[key] == VALID  # the positive control
    assert req(GC, {**GC_CONF, key: []}).command == "GC"  # an empty list: none is valid
    conf = GC_CONF if valid is None else {**GC_CONF, key: valid}
    with pytest.raises(p.CniError) as e:
        req(GC, conf)
    assert e.value.code == p.BAD_CONFIG and named in e.value.details, e.value.details
    assert key in e.value.details


@pytest.mark.parametrize(
    "stdin,named",
    [
        (b"[" * 100_000, "nested deeper"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested deeper"),
        (
            json.dumps(
                {
                    **CONF,
                    "args": {
                        "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
                    },
                }
            ).encode(),
            "nested deeper",
        ),
        (json.dumps({**CONF, "args": {"x": "a" * p.MAX_STDIN}}).encode(), "bytes on stdin"),
    ],
)
def test_nesting_and_size_limits_are_cni_errors(stdin, named):
    assert req(ADD, {**CONF, "args": {"x": [[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]}})
    with pytest.raises(p.CniError) as e:
        req(ADD, stdin)
    assert e.value.code == p.BAD_CONFIG and named in e.value.details


def test_unsupported_field_names_key_and_value():
    with pytest.raises(p.CniError) as e:
        req(ADD, {**CONF, "frobnicate": 7})
    assert "frobnicate=7" in e.value.details
    assert e.value.as_json("1.0.0") == {
        "cniVersion": "1.0.0", "code": 2, "msg": "unsupported field in network configuration",
        "details": "frobnicate=7",
    }  # fmt: skip


def test_version_needs_no_container_and_lists_every_version():
    r = req({"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.1.0"})
    assert p.version_result(r.version) == {
        "cniVersion": "1.1.0",
        "supportedVersions": list(p.SUPPORTED),
    }
    assert req({"CNI_COMMAND": "VERSION"}, b"").version == "0.3.0"  # no input: the oldest


def test_dns_nameservers_become_the_guests_ipv4_dns():
    r = req(ADD, {**CONF, "dns": {"nameservers": ["192.0.2.53", "2001:db8::53"]}})
    assert r.options() == {"dns": ["192.0.2.53"]}


@pytest.mark.parametrize("version", p.SUPPORTED)
def test_result_shape_per_version(version):
    ifaces = [{"name": "fr-x"}, {"name": "tap0", "mac": "06:00:0a:09:00:02", "sandbox": "abc"}]
    ips = [{"address": "10.9.0.2/30", "gateway": "10.9.0.1", "interface": 1}]
    out = p.result(version, ifaces, ips, [{"dst": "0.0.0.0/0"}], {"nameservers": ["192.0.2.53"]})
    assert out["cniVersion"] == version and out["interfaces"] == ifaces
    assert ("version" in out["ips"][0]) == (version < "1.0.0")
    assert out["routes"] == [{"dst": "0.0.0.0/0"}] and out["dns"]["nameservers"] == ["192.0.2.53"]
    assert "routes" not in p.result(version, ifaces, ips, [])  # empty optional fields left out


@pytest.mark.parametrize(
    "answer,named",
    [
        ({"ips": 5}, '"ips" must be a list'),
        ({"ips": [5]}, '"ips[0]" must be an object'),
        ({"ips": [{"address": 10}]}, '"ips[0].address" must be an address'),
        ({"ips": [{"address": "10.0.0.5/24", "gateway": ["10.0.0.1"]}]}, '"ips[0].gateway"'),
        ({"ips": [{"gateway": "10.0.0.1"}]}, '"ips[0].address" is required'),
        ({"ips": [], "dns": []}, '"dns" must be an object'),
    ],
)
def test_a_malformed_ipam_result_is_code_103_naming_the_field(answer, named):
    from fireroute.cni import ipam

    good = {"ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}]}
    assert ipam.address(good) == ("10.0.0.5/24", "10.0.0.1")  # the positive control
    with pytest.raises(p.CniError) as e:
        ipam.address(answer)
    assert e.value.code == 103 and named in e.value.details, e.value.details


GO_MAP = {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": "127.0.0.1"}
"""a port mapping as containerd 1.6 sends it (its Go struct has no JSON tags)"""


@pytest.mark.parametrize(
    "mapping",
    [
        MAP,  # the CNI convention's spelling
        GO_MAP,
        {"hostport": 8080, "CONTAINERPORT": 80, "protocol": "TCP", "hostIp": "127.0.0.1"},
    ],
)
def test_runtime_keys_are_read_as_go_reads_them_any_case(mapping):
    conf = with_(GOOD, "runtimeConfig.portMappings", [mapping])
    conf["runtimeConfig"] = {"PortMappings": conf["runtimeConfig"]["portMappings"]}
    r = req(ADD, conf)
    assert p.port_mappings(r.config) == ["127.0.0.1:8080:80/tcp"]
    (read,) = r.config["runtimeConfig"]["portMappings"]  # type: ignore[index]
    assert list(read) == list(MAP) and list(r.config["runtimeConfig"]) == ["portMappings"]


def test_two_spellings_of_one_runtime_key_the_later_wins_as_in_go():
    conf = with_(GOOD, "runtimeConfig.portMappings", [{**MAP, "HostPort": 9090}])
    assert p.port_mappings(req(ADD, conf).config) == ["127.0.0.1:9090:80/tcp"]


@pytest.mark.parametrize(
    "mapping,named",
    [
        ({**GO_MAP, "HostPort": 0}, "runtimeConfig.portMappings[0].hostPort"),
        ({**GO_MAP, "Protocol": "sctp"}, "runtimeConfig.portMappings[0].protocol"),
        ({**GO_MAP, "HostIP": "127.0.0.1:5"}, "runtimeConfig.portMappings[0].hostIP"),
        # a key that is no spelling of a known one is not guessed at: hostPort is missing
        (
            {k: v for k, v in GO_MAP.items() if k != "HostPort"} | {"Host_Port": 8080},
            "runtimeConfig.portMappings[0].hostPort",
        ),
    ],
)
def test_any_case_keys_with_bad_values_are_refused_and_named(mapping, named):
    good = with_(GOOD, "runtimeConfig.portMappings", [GO_MAP])
    assert p.port_mappings(req(ADD, good).config) == ["127.0.0.1:8080:80/tcp"]  # the control
    with pytest.raises(p.CniError) as e:
        req(ADD, with_(GOOD, "runtimeConfig.portMappings", [mapping]))
    assert e.value.code == p.BAD_CONFIG and f'"{named}"' in e.value.details, e.value.details
