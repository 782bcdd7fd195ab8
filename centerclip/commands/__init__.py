"""The command lines, one module each: a parser into the library's frozen config, one call into
the library, the output. ``pipelines/*.py`` run them; tests call their ``main(argv)`` directly.
Each module imports only what parsing needs, so ``--help`` and bad arguments answer at once."""
