from triqdef.cli import entry

entry()
