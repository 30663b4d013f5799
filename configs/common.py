"""What the config files share: the parsing of their ``get_config(arg)`` argument."""


def parse_arg(arg, **defaults):
  """``"size=base,nsp=False"`` -> {"size": "base", "nsp": "False"}; only keys in ``defaults``,
  each a string default. A bad item is one error naming it and the keys there are."""
  options = dict(defaults)
  for item in (arg or "").split(","):
    key, sep, value = item.partition("=")
    if item and (not sep or key not in defaults):
      raise ValueError(f"config argument {item!r}: use key=value with keys {sorted(defaults)}.")
    if item:
      options[key] = value
  return options
