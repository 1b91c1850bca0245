"""The subcommands of ``gradpower``, one module each: ``parser_options()`` (its help), ``add_arguments(parser)``
(its flags) and ``run(args, command)`` (what it does; ``command`` is the command line as typed, for hints).
:mod:`.options` holds what several share; :mod:`gradpower.cli` dispatches."""
