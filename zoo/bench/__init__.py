def add_arguments(parser):
    parser.add_argument("names", nargs="*")
    parser.add_argument("--all", action="store_true")


def run(args):
    raise SystemExit("zoo check: not implemented yet")
