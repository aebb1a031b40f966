"""Command-line flags that messages of the lower layers name (so a warning can say exactly what to type), kept
apart from the command line's own module so that naming them loads nothing."""

ACCEPT_FLAG = "--accept-new-key"
OVERRIDE_FLAG = "--override-verified"
