"""Editing the ``ip=`` token of a guest kernel command line.

Pure string handling shared by the API path (``client.merge_boot_args``) and the
config-file path (``configfile.merge_config``).

Rules, following the kernel's own command-line splitting:

* arguments are separated by whitespace outside double quotes;
* a lone ``--`` ends the kernel's arguments: what follows goes to init, so ``ip=``
  tokens there are left alone and ours is placed before the ``--``;
* every kernel ``ip=`` token is replaced by ``ip_arg`` (the kernel honours only the
  last one anyway), at the position of the first one; with none, it is appended;
* ``ip_arg=None`` removes kernel ``ip=`` tokens;
* all other arguments keep their text and order; if nothing changes the input string
  is returned untouched (whitespace included).
"""

_INIT_SEPARATOR = "--"


def split_cmdline(cmdline: str) -> list[str]:
    """Split a kernel command line into arguments, keeping quotes verbatim."""
    tokens: list[str] = []
    current: list[str] = []
    in_quote = False
    for ch in cmdline:
        if ch == '"':
            in_quote = not in_quote
            current.append(ch)
        elif ch.isspace() and not in_quote:
            if current:
                tokens.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        tokens.append("".join(current))
    return tokens


def check_ip_arg(ip_arg: str) -> None:
    """Raise ValueError unless ``ip_arg`` is a single ``ip=...`` kernel argument."""
    if not isinstance(ip_arg, str) or not ip_arg.startswith("ip=") or len(ip_arg) == 3:
        raise ValueError(
            f"invalid ip argument {ip_arg!r}: expected a full kernel token such as "
            "'ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off'"
        )
    if any(ch.isspace() for ch in ip_arg) or '"' in ip_arg:
        raise ValueError(
            f"invalid ip argument {ip_arg!r}: it must be one kernel argument "
            "(no whitespace or quotes)"
        )


def set_ip_arg(boot_args: str, ip_arg: str | None) -> str:
    """Return ``boot_args`` with its kernel ``ip=`` argument set to ``ip_arg``.

    ``ip_arg`` is the whole token (``ip=G::T:GM::GI:off``); ``None`` removes any
    kernel ``ip=`` argument.
    """
    if ip_arg is not None:
        check_ip_arg(ip_arg)
    tokens = split_cmdline(boot_args or "")
    try:
        split_at = tokens.index(_INIT_SEPARATOR)
    except ValueError:
        split_at = len(tokens)
    kernel, init = tokens[:split_at], tokens[split_at:]

    kept: list[str] = []
    insert_at: int | None = None
    for token in kernel:
        if token.startswith("ip="):
            if insert_at is None:
                insert_at = len(kept)
        else:
            kept.append(token)
    if ip_arg is not None:
        kept.insert(len(kept) if insert_at is None else insert_at, ip_arg)

    result = kept + init
    if result == tokens:
        return boot_args
    return " ".join(result)


def get_ip_arg(boot_args: str) -> str | None:
    """The last kernel ``ip=`` argument of ``boot_args`` (the one the kernel uses)."""
    found = None
    for token in split_cmdline(boot_args or ""):
        if token == _INIT_SEPARATOR:
            break
        if token.startswith("ip="):
            found = token
    return found
