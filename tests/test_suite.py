"""The embedded task suite: real digits, rendered characters, fixed splits, cached generation."""

import numpy as np
import torch

from layerwise.tasks import TASKS
from layerwise.tasks.suite import PrintedDigits, render_glyphs


def test_digits_are_sklearns_1797_images_resized_and_split():
    data = TASKS["digits"]().load()
    sizes = [len(s) for s in (data.train, data.val, data.test)]
    assert sum(sizes) == 1797 and sizes[0] > sizes[1] > 0
    assert data.train.x.shape[1:] == (1, 16, 16)
    assert set(data.test.y.tolist()) == set(range(10))
    # standardised by the training split
    assert abs(data.train.x.mean().item()) < 1e-4 and abs(data.train.x.std().item() - 1) < 1e-3


def test_splits_are_fixed_by_the_split_seed_and_disjoint():
    a, b = TASKS["digits"]().load(seed=0), TASKS["digits"]().load(seed=5)
    assert torch.equal(a.test.x, b.test.x)  # the run seed does not move the split
    c = TASKS["digits"](split_seed=1).load()
    assert not torch.equal(a.test.x, c.test.x)
    rows = lambda s: {tuple(r) for r in s.x.flatten(1).numpy().round(4).tolist()}  # noqa: E731
    assert not rows(a.train) & rows(a.test)


def test_printed_tasks_render_each_class_and_reproduce_from_the_cache(data_dir):
    task = PrintedDigits(per_class=12)
    first = task.load()
    assert task.cache_file().exists() and str(task.cache_file()).startswith(str(data_dir))
    again = PrintedDigits(per_class=12).load()
    assert torch.equal(first.train.x, again.train.x)
    labels = torch.cat([first.train.y, first.val.y, first.test.y])
    assert torch.bincount(labels).tolist() == [12] * 10
    letters = TASKS["printed-letters"](per_class=4).load()
    assert letters.train.x.shape[1:] == (1, 16, 16) and TASKS["printed-letters"].num_classes == 26


def test_rendered_glyphs_differ_between_characters_and_have_ink():
    glyphs = render_glyphs("0I")
    assert glyphs.shape[:2] == (16, 2)
    ink = glyphs.mean(axis=(2, 3))
    assert (ink > 0.02).all() and (ink < 0.6).all()
    assert (ink[:, 0] > ink[:, 1]).all()  # a zero has more ink than a capital I in every font


def test_generated_images_are_deterministic_across_instances():
    a, _ = PrintedDigits(per_class=3).generate()
    b, _ = PrintedDigits(per_class=3).generate()
    assert np.array_equal(a, b)
