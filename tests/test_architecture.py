"""Imports point down: the import graph of jaxlab/ and benchmarks/ follows LAYERS, with no cycle.

The graph is read from the source with `ast` (nothing is imported): every `import` and
`from ... import` anywhere in a module (inside functions too), relative imports resolved, and
the lazy names of a package's `_EXPORTS` table (module paths loaded by importlib on first use).
See docs/architecture.md.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREES = ('jaxlab', 'benchmarks')

# Lowest first. A module belongs to the first entry that is its name or a package above it; it
# may import only modules of its own layer or of a layer below.
LAYERS = (
    ('jaxlab.checks', 'jaxlab.host', 'jaxlab.params', 'jaxlab.reference_claims'),
    ('jaxlab.data', 'jaxlab.metrics'),
    ('jaxlab.models', 'jaxlab.optim', 'jaxlab.parallel'),
    ('jaxlab.credit', 'jaxlab.io'),
    ('jaxlab.peft', 'jaxlab.train'),
    ('jaxlab.experiments',),
    ('jaxlab.cli', 'jaxlab.launch', 'jaxlab.export', 'jaxlab.claims', 'jaxlab.__main__', 'jaxlab'),
    ('benchmarks.workloads', 'benchmarks.torch_refs'),
    ('benchmarks.loop', 'benchmarks.ladder_time', 'benchmarks.op_table', 'benchmarks.seed_axis'),
    ('benchmarks.run',),
    ('benchmarks.placement', 'benchmarks.__main__', 'benchmarks'),
)


def _modules():
  """{dotted module name: path} of every .py file under TREES (symlinks not followed)."""
  mods = {}
  for tree in TREES:
    for dirpath, _, files in os.walk(os.path.join(ROOT, tree)):
      for f in files:
        if f.endswith('.py'):
          path = os.path.join(dirpath, f)
          name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
          mods[name[:-len('.__init__')] if name.endswith('.__init__') else name] = path
  return mods


def _resolve(name, mods):
  """The module of ours that `name` (a module or a name inside one) refers to, or None."""
  while name and name not in mods:
    name = name.rpartition('.')[0]
  return name or None


def import_graph():
  """{module: {imported module: [line, ...]}} over TREES."""
  mods = _modules()
  graph = {m: {} for m in mods}

  def add(src, target, line):
    dst = _resolve(target, mods)
    if dst and dst != src:
      graph[src].setdefault(dst, []).append(line)

  for src, path in mods.items():
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    package = src if path.endswith('__init__.py') else src.rpartition('.')[0]
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        for alias in node.names:
          add(src, alias.name, node.lineno)
      elif isinstance(node, ast.ImportFrom):
        if node.level:
          parts = package.split('.')
          base = '.'.join(parts[:len(parts) - (node.level - 1)])
          module = f'{base}.{node.module}' if node.module else base
        else:
          module = node.module
        for alias in node.names:  # `from pkg import mod` imports pkg.mod
          full = f'{module}.{alias.name}'
          add(src, full if full in mods else module, node.lineno)
      elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
            and any(isinstance(t, ast.Name) and t.id == '_EXPORTS' for t in node.targets)):
        for value in node.value.values:
          if isinstance(value, ast.Constant) and isinstance(value.value, str):
            add(src, value.value, node.lineno)
  return graph


def layer_of(module):
  best = None
  for i, layer in enumerate(LAYERS):
    for entry in layer:
      if module == entry or module.startswith(entry + '.'):
        if best is None or len(entry) > len(best[1]):
          best = (i, entry)
  return best


def package_of(module):
  """jaxlab.<first part> (a package or a top-level module), or the benchmarks package."""
  parts = module.split('.')
  return '.'.join(parts[:2]) if parts[0] == 'jaxlab' and len(parts) > 1 else parts[0]


def _cycles(graph):
  """Strongly connected components with more than one node (Tarjan, iterative)."""
  index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
  for root in sorted(graph):
    if root in index:
      continue
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = counter[0]
    counter[0] += 1
    stack.append(root)
    on_stack.add(root)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is not None:
        if child not in index:
          index[child] = low[child] = counter[0]
          counter[0] += 1
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph.get(child, ())))))
        elif child in on_stack:
          low[node] = min(low[node], index[child])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        if len(component) > 1:
          out.append(sorted(component))
  return out


def _edges_within(graph, component):
  members = set(component)
  return [f'{a} -> {b} (line {lines[0]})' for a in component
          for b, lines in sorted(graph[a].items()) if b in members]


def test_every_module_has_a_layer():
  unplaced = sorted(m for m in import_graph() if layer_of(m) is None)
  assert not unplaced, f'modules in no layer of LAYERS (add them): {unplaced}'


def test_no_module_cycle():
  graph = import_graph()
  cycles = _cycles(graph)
  assert not cycles, 'module import cycles:\n' + '\n'.join(
      f'  {" <-> ".join(c)}: ' + '; '.join(_edges_within(graph, c)) for c in cycles)


def test_no_package_cycle():
  graph = import_graph()
  packages, why = {}, {}
  for a, targets in graph.items():
    for b, lines in targets.items():
      pa, pb = package_of(a), package_of(b)
      if pa != pb:
        packages.setdefault(pa, set()).add(pb)
        why.setdefault((pa, pb), f'{a} -> {b} (line {lines[0]})')
      packages.setdefault(pb, set())
  cycles = _cycles(packages)
  assert not cycles, 'package import cycles:\n' + '\n'.join(
      f'  {" <-> ".join(c)}: ' + '; '.join(why[(a, b)] for a in c for b in c if (a, b) in why)
      for c in cycles)


def test_imports_point_down():
  upward = []
  for a, targets in sorted(import_graph().items()):
    la = layer_of(a)
    for b, lines in sorted(targets.items()):
      lb = layer_of(b)
      if la and lb and lb[0] > la[0]:
        upward.append(f'  {a} (layer {la[0]}, {la[1]}) imports {b} (layer {lb[0]}, {lb[1]}) '
                      f'at line {", ".join(map(str, lines))}')
  assert not upward, 'imports that point up the layers:\n' + '\n'.join(upward)


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
  graph = import_graph()
  assert 'jaxlab.io.pretrained' in graph['jaxlab']  # an _EXPORTS entry
  assert 'jaxlab.parallel.processes' in graph['jaxlab.io.writers']  # imported inside a function
