"""fireroute as a CNI plugin (issue 12, in progress): protocol.py reads a runtime's request
and writes the plugin's answers in the version asked. The plugin's verbs are not wired into
the ``fireroute`` program yet: it does not act as a plugin until ADD, DEL and CHECK exist."""
