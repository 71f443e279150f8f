"""The XLA flags of the test session, for the tests' own processes and the commands they start.

COMPILE: XLA:CPU's backend optimisation level 1 (LLVM -O1) in place of the default 2. Compiling
dominates this suite's time (most tests run a few steps of a program compiled for them), and -O1
cut the whole suite from 892 s to 723 s on two CPU cores with every test passing: the HLO
passes are the same, and LLVM's levels keep IEEE float semantics, so the tolerance checks mean
what they mean at the default level (the generated code runs a little slower; the suite
without its long tier at the default level, 2026-12-05: 661 of 662 passed, and the other, a
tolerance of 1e-7 on a rematerialised gradient where one element differed by 3.2e-7, was
widened to 1e-6). Bit-for-bit
equality of two programs is another matter: the two programs' code can differ at one level
and not at the other, and an equality can hold at level 1 and fail at the default level (seen:
tests/test_default_compile_level.py), so the seeds' bit-for-bit tests run again at the
default level in the long tier. JAXLAB_TEST_XLA_OPT=default runs the whole suite at XLA's
default level.

`for_command()` is what a command started by a test gets in XLA_FLAGS: COMPILE and no device
count (a command sets its own, as a user's would).
"""

import os

COMPILE = ('' if os.environ.get('JAXLAB_TEST_XLA_OPT', '').lower() == 'default'
           else '--xla_backend_optimization_level=1')


def for_command():
  return COMPILE
