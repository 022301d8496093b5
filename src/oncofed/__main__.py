"""``python -m oncofed`` is the ``oncofed`` command."""

from oncofed.cli.main import app

app(prog_name="oncofed")
