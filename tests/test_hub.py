"""Weights by Hugging Face hub name: vit_with_peft('timm/...') and pretrained.source=hub read the
shared hub cache through huggingface_hub, offline when the cache holds the file. The cache is
built here in huggingface_hub's own layout (models--<org>--<name>/refs/main and
snapshots/<commit>/model.safetensors), from the tiny timm fixture."""

import shutil

import numpy as np
import pytest

from jaxlab import checks, experiments
from jaxlab.io import pretrained as pt
from jaxlab.params import flatten
from test_vit_loaders import TINY

pytest.importorskip('huggingface_hub')
constants = pytest.importorskip('huggingface_hub.constants')
REPO = 'timm/vit_tiny_test.fixture'
COMMIT = '0123456789abcdef0123456789abcdef01234567'


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
  """A hub cache holding REPO's model.safetensors, and huggingface_hub offline on it."""
  cache = tmp_path / 'hub'
  repo = cache / f'models--{REPO.replace("/", "--")}'
  (repo / 'refs').mkdir(parents=True)
  (repo / 'refs' / 'main').write_text(COMMIT)
  snapshot = repo / 'snapshots' / COMMIT
  snapshot.mkdir(parents=True)
  shutil.copy(TINY, snapshot / 'model.safetensors')
  monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
  monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
  return cache


def test_hub_names_are_told_from_paths(tmp_path, monkeypatch):
  assert pt.hub_name('timm/vit_small_patch16_224.augreg_in21k_ft_in1k') == \
      'timm/vit_small_patch16_224.augreg_in21k_ft_in1k'
  assert pt.hub_name('hf-hub:timm/vit_base') == 'timm/vit_base'
  assert pt.hub_name('weights/model.safetensors') is None  # a file's path
  assert pt.hub_name('model.npz') is None
  (tmp_path / 'org').mkdir()
  (tmp_path / 'org' / 'name').write_text('')
  monkeypatch.chdir(tmp_path)  # an existing relative path is a path
  assert pt.hub_name('org/name') is None


def test_vit_with_peft_by_hub_name_reads_the_offline_cache(offline_cache):
  import jaxlab
  _, by_name, _ = jaxlab.vit_with_peft(REPO, num_classes=10, method='lora', heads=2)
  _, by_file, _ = jaxlab.vit_with_peft(TINY, num_classes=10, method='lora', heads=2)
  assert pt.hub_file(REPO) == str(offline_cache / f'models--{REPO.replace("/", "--")}' /
                                  'snapshots' / COMMIT / 'model.safetensors')
  for path, value in flatten(by_file).items():
    np.testing.assert_array_equal(flatten(by_name)[path], value, err_msg=path)
  with pytest.raises(FileNotFoundError, match='timm/not_cached.*is not in the hub cache'):
    jaxlab.vit_with_peft('timm/not_cached', num_classes=10)


def test_config_source_hub(offline_cache):
  from configs import hybrid
  from jaxlab.experiments import peft
  c = hybrid.get_config('quick')
  c.pretrained.update(source='hub', name=REPO)
  c.model.update(image_size=32, patch=8, width=128, depth=2, heads=2, mlp_dim=256)
  experiments.validate(c, devices=1)
  params = peft.load_pretrained(c)
  want = pt.timm_to_params(pt.read_safetensors(TINY))[1]
  for path, value in flatten(want).items():
    np.testing.assert_array_equal(flatten(params)[path], value, err_msg=path)
  assert peft.backbone_source(c, '/tmp/x') == {'source': 'hub', 'name': REPO}
  c.pretrained.name = 'timm/not_cached'
  with pytest.raises(checks.Missing, match='not in the Hugging Face cache') as e:
    peft.check_files(c)
  assert str(offline_cache) in str(e.value)
  c.pretrained.name = ''
  with pytest.raises(checks.BadInput, match='needs a hub repository name'):
    experiments.validate(c, devices=1)
  c.pretrained.update(source='timm', path=TINY)
  with pytest.raises(checks.BadInput, match='pretrained.name is not read'):
    experiments.validate(c, overridden={'pretrained.name'}, devices=1)
