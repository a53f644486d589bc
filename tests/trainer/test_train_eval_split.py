"""ddsp-train watches the dataset's eval split (eval_loss) when the dataset has one."""

import pytest

from trainer import testing
from trainer.training import train as train_lib
from trainer.training.data import open_source


@pytest.fixture
def with_eval(tmp_path, tiny_layout):
    testing.write_dataset(tmp_path / 'ds', tiny_layout, n_examples=8, n_shards=2)
    testing.write_dataset(tmp_path / 'ds', tiny_layout, n_examples=2, n_shards=1, split='eval')
    return tmp_path / 'ds'


def test_held_out_data_is_the_eval_split_of_a_dataset_that_has_one(with_eval, tiny_dataset):
    assert train_lib.held_out_data(open_source(str(with_eval))) == f'{with_eval}:eval'
    assert train_lib.held_out_data(open_source(str(tiny_dataset))) is None  # no eval split
    # training on the eval split itself: nothing held out to watch
    assert train_lib.held_out_data(open_source(f'{with_eval}:eval')) is None


@pytest.mark.parametrize('flags,every', [([], 50), (['--eval_every', '20'], 20),
                                         (['--eval_every', '0'], 0)])
def test_cli_passes_the_eval_split_to_the_training_run(with_eval, tmp_path, monkeypatch, flags,
                                                       every):
    seen = {}

    def fake_train(config, data, model_dir, steps, **kwargs):
        seen.update(kwargs)
        return {'step': steps}

    monkeypatch.setattr(train_lib, 'train', fake_train)
    code = train_lib.main(['--preset', 'tiny', '--data', str(with_eval), '--steps', '3',
                           '--model_dir', str(tmp_path / 'm'), '--no_tracking', *flags])
    assert code == 0
    assert seen['eval_every'] == every  # tiny: train.checkpoint_every 50 by default
    assert seen['eval_data'] == (f'{with_eval}:eval' if every else None)


def test_cli_rejects_a_negative_eval_every(with_eval, tmp_path, capsys):
    code = train_lib.main(['--preset', 'tiny', '--data', str(with_eval), '--steps', '3',
                           '--model_dir', str(tmp_path / 'm'), '--no_tracking',
                           '--eval_every', '-1'])
    assert code == 2 and '--eval_every' in capsys.readouterr().err
