"""`python -m ad3d.ops build`: compile the kernels now and say where they are."""

import sys

from ad3d.ops._ext import _state, load_extension


def main(argv: list[str]) -> int:
    if argv[:1] != ["build"]:
        print("usage: python -m ad3d.ops build", file=sys.stderr)
        return 2
    module = load_extension(verbose="-v" in argv)
    print(_state.get("info") if module is not None else _state.get("error"))
    return 0 if module is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
