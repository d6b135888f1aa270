"""The command line: argv -> settings -> one ``anyio.run`` -> exit code; one module per command."""
