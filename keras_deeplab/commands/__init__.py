"""The command line's subcommands, one module each: `register(subparsers)` adds the subcommand (argparse only:
no TensorFlow is imported until the subcommand runs) and `run(args)` calls the library and returns the exit
status."""
