"""``python -m kilo_dev.contracts``: recompile the test contracts and rewrite their committed ABI + bytecode."""

from kilo_dev.contracts import main

main()
