# `python -m jaxlab --config=NAME[:variant]`: the `jaxlab` command (jaxlab/launch.py, whose
# docstring is the --help text).
from jaxlab.launch import console

if __name__ == '__main__':
  console()
