"""A multi-host p2pchat lab in Linux network namespaces (run as root).

``topology`` builds the hosts, the switch and the NAT router; ``processes`` runs and watches the project's
commands inside them; ``commands`` knows the project's command lines; ``scenarios`` are the multi-host checks
that ``vm-lab/netns run`` and tests/lab run. Nothing here touches the machine's own network namespace: every
address, link and rule lives in a namespace the lab created and removes again.
"""
