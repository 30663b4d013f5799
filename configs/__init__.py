"""Run configs, installed as the package ``jaxssl.configs`` (see setup.cfg): each file's
``get_config(arg)`` is read by ``--config=configs/NAME.py:ARG`` or ``jaxssl.cli.load_config``."""
