"""Typed training configuration: nested dataclasses, YAML presets, ``--set a.b=c`` overrides.

A :class:`Config` is an immutable value (frozen dataclasses); overrides return a new one. It is
saved with every checkpoint as ``config.json`` in the model directory and flattened to ``a.b``
keys for MLflow params. There is no global mutable configuration.

Example::

    config = load_preset('tiny').with_overrides(['model.n_harmonics=32', 'train.batch_size=4'])
    config.flat()['model.n_harmonics']  # '32'
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from trainer.model.model_dir import CONFIG_FILENAME

PRESETS_DIR = Path(__file__).resolve().parent / 'presets'


#: The decoder's possible frame-rate inputs (``model.decoder_inputs``), see ModelConfig.
DECODER_INPUTS = ('ld_scaled', 'pw_scaled', 'f0_scaled')
#: model.reverb_type: the reference's free impulse response, or a parametric exponential decay.
REVERB_TYPES = ('ir', 'exp_decay')


class ConfigError(ValueError):
    """A configuration value, key, file or preset is invalid."""


@dataclass(frozen=True)
class DataConfig:
    """The layout of the training windows.

    ``sample_rate``, ``frame_rate`` and ``record_secs`` describe the dataset and are filled from
    its ``manifest.json`` (:func:`resolve_data`): leave them unset. Set one only to insist on it,
    and a dataset that differs is refused. ``example_secs`` is the training window: unset means
    whole records; a shorter window trains on random frame-aligned crops of the records.
    """

    sample_rate: Optional[int] = None
    frame_rate: Optional[int] = None
    record_secs: Optional[float] = None
    example_secs: Optional[float] = None
    shuffle_buffer: int = 1000
    cycle_length: int = 4  # number of shards read in parallel

    def __post_init__(self):
        for name in ('sample_rate', 'frame_rate', 'record_secs', 'example_secs'):
            value = getattr(self, name)
            _require(value is None or value > 0, f'data.{name}', value, 'must be > 0')
        _require(self.shuffle_buffer >= 0, 'data.shuffle_buffer', self.shuffle_buffer,
                 'must be >= 0')
        _require(self.cycle_length >= 1, 'data.cycle_length', self.cycle_length, 'must be >= 1')
        if self.sample_rate and self.frame_rate:
            _require(self.sample_rate % self.frame_rate == 0, 'data.frame_rate',
                     self.frame_rate, f'must divide data.sample_rate={self.sample_rate} (a '
                     'frame must hold a whole number of samples)')
        if self.frame_rate:
            for name in ('example_secs', 'record_secs'):
                value = getattr(self, name)
                if value is not None:
                    frames = value * self.frame_rate
                    _require(abs(frames - round(frames)) < 1e-6, f'data.{name}', value,
                             f'is not a whole number of frames at {self.frame_rate} frames/s')
        if self.example_secs and self.record_secs:
            _require(self.example_secs <= self.record_secs + 1e-9, 'data.example_secs',
                     self.example_secs, f'is longer than the records (data.record_secs = '
                     f'{self.record_secs:g} s); the training window can only be a crop of them')

    @property
    def resolved(self) -> bool:
        """Whether the dataset's layout has been filled in (see :func:`resolve_data`)."""
        return None not in (self.sample_rate, self.frame_rate, self.record_secs,
                            self.example_secs)

    def _need_resolved(self):
        if not self.resolved:
            raise ConfigError('the data layout is not known yet: data.sample_rate, '
                              'data.frame_rate, data.record_secs and data.example_secs come from '
                              'the dataset (trainer.model.config.resolve_data)')

    @property
    def n_samples(self) -> int:
        """Samples in a training window."""
        self._need_resolved()
        return self.n_frames * (self.sample_rate // self.frame_rate)

    @property
    def n_frames(self) -> int:
        """Frames in a training window."""
        self._need_resolved()
        return int(round(self.frame_rate * self.example_secs))

    @property
    def hop_samples(self) -> int:
        self._need_resolved()
        return self.sample_rate // self.frame_rate

    @property
    def record_frames(self) -> int:
        self._need_resolved()
        return int(round(self.frame_rate * self.record_secs))

    @property
    def crops(self) -> bool:
        """Whether training windows are crops of longer records."""
        return self.record_frames > self.n_frames


@dataclass(frozen=True)
class ModelConfig:
    """Autoencoder sizes: optional MFCC encoder, RnnFc decoder, synthesizers, loss."""

    # Encoder (MFCC -> GRU -> z); off for the paper's solo-instrument model.
    use_encoder: bool = False
    z_dims: int = 16
    encoder_rnn_channels: int = 512
    mfcc_bins: int = 30
    mfcc_fft_size: int = 1024
    # Decoder (RnnFcDecoder). Its frame-rate inputs, in order (one MLP stack each, named
    # ``in_<key>``): 'ld_scaled' (loudness_db / 80 + 1), 'pw_scaled' (power_db / 80 + 1, the
    # power computed from the audio over ``power_frame_size``-sample frames, as the DDSP-VST
    # plugin measures it) and 'f0_scaled' (MIDI / 127); with the encoder, z is appended.
    decoder_inputs: tuple[str, ...] = ('ld_scaled', 'f0_scaled')
    power_frame_size: int = 1024
    rnn_channels: int = 512
    rnn_type: str = 'gru'  # 'gru' (fast custom-gradient GRU), 'keras_gru' (same maths), 'lstm'
    mlp_units: int = 512
    mlp_layers: int = 3
    # Synthesizers.
    n_harmonics: int = 60
    n_noise_bands: int = 65
    noise_window_size: int = 257  # 0: the whole 2 * (n_noise_bands - 1)-tap window
    # How the harmonic amplitudes reach audio rate: 'window' (Hann cross-fade) or 'linear'.
    amp_resample_method: str = 'window'
    use_reverb: bool = True
    reverb_length: int = 48000
    # The learned room: 'ir' (the reference's trainable Reverb, every one of the reverb_length
    # impulse-response samples learned) or 'exp_decay' (an ExpDecayReverb: two learned numbers,
    # gain and decay, over fixed noise; one exponential decay, no free early part).
    reverb_type: str = 'ir'
    # Multi-scale spectral loss.
    fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64)
    mag_weight: float = 1.0
    logmag_weight: float = 1.0

    def __post_init__(self):
        for name in ('z_dims', 'encoder_rnn_channels', 'mfcc_bins', 'mfcc_fft_size',
                     'rnn_channels', 'mlp_units', 'mlp_layers', 'n_harmonics', 'reverb_length',
                     'power_frame_size'):
            _require(getattr(self, name) >= 1, f'model.{name}', getattr(self, name),
                     'must be >= 1')
        _require(self.n_noise_bands >= 2, 'model.n_noise_bands', self.n_noise_bands,
                 'must be >= 2')
        _require(self.rnn_type in ('gru', 'keras_gru', 'lstm'), 'model.rnn_type', self.rnn_type,
                 "must be 'gru', 'keras_gru' or 'lstm'")
        inputs = tuple(self.decoder_inputs)
        _require(len(inputs) > 0 and set(inputs) <= set(DECODER_INPUTS)
                 and len(set(inputs)) == len(inputs), 'model.decoder_inputs', inputs,
                 f'must be distinct names among {", ".join(DECODER_INPUTS)}')
        _require(self.noise_window_size >= 0, 'model.noise_window_size', self.noise_window_size,
                 'must be >= 0 (0: the whole window)')
        _require(self.reverb_type in REVERB_TYPES, 'model.reverb_type', self.reverb_type,
                 f"must be {' or '.join(repr(t) for t in REVERB_TYPES)}")
        _require(self.amp_resample_method in ('window', 'linear'), 'model.amp_resample_method',
                 self.amp_resample_method, "must be 'window' or 'linear'")
        _require(len(self.fft_sizes) > 0 and all(n >= 8 for n in self.fft_sizes),
                 'model.fft_sizes', self.fft_sizes, 'must be a non-empty list of sizes >= 8')


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, loop and bookkeeping settings."""

    batch_size: int = 32
    learning_rate: float = 3e-4
    decay_steps: int = 10000
    decay_rate: float = 0.98
    # Linear learning-rate warm-up over the first this many steps (0: none, the reference's
    # schedule). Adam's first steps are full-sized whatever the gradient; a warm-up keeps them
    # from throwing the harmonic amplitudes into exp_sigmoid's floor (docs/quality.md).
    warmup_steps: int = 0
    grad_clip_norm: float = 3.0
    seed: int = 0
    # 'bfloat16': the decoder/encoder matmuls run in bfloat16 (variables, GRU recurrence, synths
    # and loss stay float32); about 1.3x faster on CPUs with AVX512-BF16/AMX and on GPUs.
    compute_dtype: str = 'float32'
    jit_compile: bool = False
    checkpoint_every: int = 300
    keep_checkpoints: int = 3
    # Save the tf.data iterator (incl. its shuffle buffer) in checkpoints, so that a resumed run
    # sees exactly the batches an uninterrupted one would. Costs shuffle_buffer examples of disk
    # per checkpoint; when off, a resumed run reshuffles with a seed derived from the step.
    checkpoint_data_iterator: bool = False
    log_every: int = 10
    summary_every: int = 1000
    # MLflow's system metrics (CPU, memory, disk, network; GPU utilisation and memory where a GPU
    # is) sampled every this many seconds into the run's system/* metrics; 0: off.
    system_metrics_every_s: float = 5.0

    def __post_init__(self):
        _require(self.batch_size >= 1, 'train.batch_size', self.batch_size, 'must be >= 1')
        _require(self.compute_dtype in ('float32', 'bfloat16'), 'train.compute_dtype',
                 self.compute_dtype, "must be 'float32' or 'bfloat16'")
        _require(self.learning_rate > 0, 'train.learning_rate', self.learning_rate, 'must be > 0')
        _require(self.decay_steps >= 1, 'train.decay_steps', self.decay_steps, 'must be >= 1')
        _require(0 < self.decay_rate <= 1, 'train.decay_rate', self.decay_rate,
                 'must be in (0, 1]')
        _require(self.warmup_steps >= 0, 'train.warmup_steps', self.warmup_steps,
                 'must be >= 0 (0 = no warm-up)')
        _require(self.grad_clip_norm > 0, 'train.grad_clip_norm', self.grad_clip_norm,
                 'must be > 0')
        _require(self.keep_checkpoints >= 1, 'train.keep_checkpoints', self.keep_checkpoints,
                 'must be >= 1')
        for name in ('checkpoint_every', 'log_every', 'summary_every',
                     'system_metrics_every_s'):
            _require(getattr(self, name) >= 0, f'train.{name}', getattr(self, name),
                     'must be >= 0 (0 = off)')


@dataclass(frozen=True)
class Config:
    """The full configuration of one training run."""

    preset: str = 'custom'
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if 'pw_scaled' in self.model.decoder_inputs and self.data.resolved:
            hop = self.data.hop_samples
            _require(hop <= self.model.power_frame_size, 'model.power_frame_size',
                     self.model.power_frame_size, f'must be >= the hop of {hop} samples per '
                     'frame (data.sample_rate / data.frame_rate) for the power feature')
        if self.model.use_encoder and self.data.resolved:
            hop = self.data.hop_samples
            _require(hop <= self.model.mfcc_fft_size, 'model.mfcc_fft_size',
                     self.model.mfcc_fft_size, f'must be >= the hop of {hop} samples per frame '
                     "(data.sample_rate / data.frame_rate) for the encoder's MFCCs")

    # ---- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain nested dict (tuples as lists), suitable for JSON/YAML."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict, source: str = 'config') -> Config:
        """Build a Config from a (possibly partial) nested dict; unknown keys are an error.

        Args:
            d: Nested mapping, e.g. ``{'model': {'n_harmonics': 60}}``. Missing keys keep their
                defaults.
            source: Where the dict came from (file name), used in error messages.
        """
        return _build(cls, d, source, prefix='')

    def flat(self) -> dict[str, str]:
        """Flattened ``{'a.b': 'value'}`` view of every field, for MLflow params."""
        out: dict[str, str] = {}

        def walk(node, prefix):
            if isinstance(node, dict):
                for key, value in node.items():
                    walk(value, f'{prefix}{key}.' if isinstance(value, dict) else f'{prefix}{key}')
            else:
                out[prefix] = json.dumps(node) if isinstance(node, list) else str(node)

        walk(self.to_dict(), '')
        return out

    def with_overrides(self, overrides: typing.Iterable[str]) -> Config:
        """Return a copy with ``'a.b=value'`` overrides applied (values converted per field).

        Raises:
            ConfigError: malformed override, unknown key (named), or a value of the wrong type.
        """
        d = self.to_dict()
        for item in overrides:
            if '=' not in item:
                raise ConfigError(f"override {item!r}: expected the form 'section.key=value'")
            key, raw = item.split('=', 1)
            key = key.strip()
            parts = key.split('.')
            node, cls = d, Config
            for i, part in enumerate(parts):
                hints = typing.get_type_hints(cls)
                if part not in hints:
                    valid = ', '.join(sorted(_field_names(cls)))
                    where = '.'.join(parts[:i]) or 'top level'
                    raise ConfigError(
                        f'unknown config key {key!r} ({part!r} is not a field of {where}; '
                        f'valid: {valid})')
                ftype = hints[part]
                if i < len(parts) - 1:
                    if not dataclasses.is_dataclass(ftype):
                        raise ConfigError(f'unknown config key {key!r}: {part!r} is not a section')
                    node, cls = node[part], ftype
                else:
                    if dataclasses.is_dataclass(ftype):
                        raise ConfigError(f'config key {key!r} is a section; set one of its '
                                          f'fields, e.g. {key}.{_field_names(ftype)[0]}=...')
                    node[part] = _convert_str(raw.strip(), ftype, key)
        return Config.from_dict(d, source='overrides')

    # ---- files -------------------------------------------------------------------------------
    def save(self, model_dir: str | os.PathLike) -> Path:
        """Write ``config.json`` into ``model_dir`` (created if needed) and return its path."""
        from ddsp_core import runtime

        return runtime.write_atomic(Path(model_dir) / CONFIG_FILENAME,
                                    json.dumps(self.to_dict(), indent=2, sort_keys=True) + '\n')

    @classmethod
    def load(cls, path: str | os.PathLike) -> Config:
        """Read a config from a ``.json``/``.yaml`` file or a model dir holding ``config.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILENAME
        if not path.exists():
            raise ConfigError(f'config file {path} does not exist')
        text = path.read_text()
        try:
            d = json.loads(text) if path.suffix == '.json' else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f'config file {path} is not valid JSON/YAML: {e}') from e
        if not isinstance(d, dict):
            raise ConfigError(f'config file {path}: expected a mapping at the top level')
        return cls.from_dict(d, source=str(path))


def available_presets() -> list[str]:
    """Names of the YAML presets shipped in ``trainer/model/presets``."""
    return sorted(p.stem for p in PRESETS_DIR.glob('*.yaml'))


def load_preset(name: str) -> Config:
    """Load a preset by name (``'solo_instrument'``, ``'tiny'``) or from a YAML/JSON path."""
    path = Path(name)
    if path.suffix in ('.yaml', '.yml', '.json') and path.exists():
        config = Config.load(path)
        return config
    preset_path = PRESETS_DIR / f'{name}.yaml'
    if not preset_path.exists():
        raise ConfigError(f'unknown preset {name!r}; available: {", ".join(available_presets())} '
                          '(or pass a path to a .yaml/.json config file)')
    config = Config.load(preset_path)
    return dataclasses.replace(config, preset=name)


# ---- helpers ---------------------------------------------------------------------------------
def _require(ok: bool, key: str, value, reason: str) -> None:
    if not ok:
        raise ConfigError(f'{key} = {value!r} {reason}')


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build(cls, d, source, prefix):
    if not isinstance(d, dict):
        raise ConfigError(f'{source}: {prefix.rstrip(".") or "config"} must be a mapping, '
                          f'got {type(d).__name__}')
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise ConfigError(f'{source}: unknown config key(s) '
                          f'{", ".join(prefix + k for k in unknown)}; valid in '
                          f'{prefix.rstrip(".") or "top level"}: {", ".join(_field_names(cls))}')
    kwargs = {}
    for key, value in d.items():
        ftype = hints[key]
        if dataclasses.is_dataclass(ftype):
            kwargs[key] = _build(ftype, value, source, prefix=f'{prefix}{key}.')
        else:
            kwargs[key] = _check_value(value, ftype, f'{prefix}{key}', source)
    return cls(**kwargs)


def _check_value(value, ftype, key, source):
    """Coerce a YAML/JSON value to the field type, or raise naming the key."""
    origin = typing.get_origin(ftype)
    try:
        if ftype is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if ftype is int:
            if isinstance(value, bool) or not float(value).is_integer():
                raise TypeError
            return int(value)
        if ftype is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if ftype is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if origin is tuple:
            (elem, *_rest) = typing.get_args(ftype)
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(_check_value(v, elem, key, source) for v in value)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in typing.get_args(ftype):
                return None
            inner = [a for a in typing.get_args(ftype) if a is not type(None)][0]
            return _check_value(value, inner, key, source)
    except (TypeError, ValueError):
        raise ConfigError(f'{source}: {key} = {value!r} is not a valid '
                          f'{getattr(ftype, "__name__", ftype)}') from None
    raise ConfigError(f'{source}: {key} has an unsupported type {ftype}')


def _convert_str(raw: str, ftype, key: str):
    """Convert a command-line string to the field type (``'1e-3'`` -> 0.001, ``'[1,2]'``...)."""
    origin = typing.get_origin(ftype)
    if origin in (typing.Union, types.UnionType):
        if raw.strip().lower() in ('none', 'null', ''):
            if type(None) in typing.get_args(ftype):
                return None
        inner = [a for a in typing.get_args(ftype) if a is not type(None)][0]
        return _convert_str(raw, inner, key)
    try:
        if ftype is bool:
            low = raw.lower()
            if low in ('true', '1', 'yes', 'on'):
                return True
            if low in ('false', '0', 'no', 'off'):
                return False
            raise ValueError
        if ftype is int:
            f = float(raw)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if ftype is float:
            return float(raw)
        if ftype is str:
            return raw
        if typing.get_origin(ftype) is tuple:
            value = yaml.safe_load(raw)
            if isinstance(value, (int, float)):
                value = [value]
            if not isinstance(value, list):
                value = [v for v in raw.strip('()[]').split(',') if v.strip()]
                value = [yaml.safe_load(v) for v in value]
            (elem, *_rest) = typing.get_args(ftype)
            return [_convert_str(str(v), elem, key) for v in value]
    except (ValueError, yaml.YAMLError):
        raise ConfigError(f'override {key}={raw!r}: not a valid '
                          f'{getattr(ftype, "__name__", ftype)}') from None
    raise ConfigError(f'override {key}: unsupported type {ftype}')


def resolve_data(config: Config, layout, source: str) -> Config:
    """Fill the data layout from the dataset's: the model is built for the dataset's rates.

    Args:
        config: the run's configuration; ``data.sample_rate``, ``data.frame_rate`` and
            ``data.record_secs`` may be unset (the usual case) or must equal the dataset's;
            ``data.example_secs`` (the training window) may be unset (whole records) or at most
            the dataset's example length.
        layout: the dataset's :class:`ddsp_core.records.Layout`.
        source: how to name the dataset in messages (its manifest's path).

    Raises:
        ConfigError: the config asks for something the data cannot give; the message names the
            key, the dataset's value and what to do.
    """
    d = config.data
    theirs = {'sample_rate': layout.sample_rate, 'frame_rate': layout.frame_rate,
              'record_secs': layout.example_secs}
    for key, value in theirs.items():
        mine = getattr(d, key)
        if mine is not None and abs(float(mine) - float(value)) > 1e-9:
            what = {'sample_rate': 'prepare the data at that rate (ddsp-prepare --sample_rate '
                                   f'{mine})',
                    'frame_rate': f'prepare the data at that rate (ddsp-prepare --frame_rate '
                                  f'{mine})',
                    'record_secs': 'use data.example_secs to train on shorter crops'}[key]
            raise ConfigError(f'data.{key} = {mine:g} but the dataset {source} has {key} '
                              f"{value:g}; drop the setting to use the dataset's value, or "
                              f'{what}')
    window = d.example_secs if d.example_secs is not None else layout.example_secs
    if window > layout.example_secs + 1e-9:
        raise ConfigError(f'data.example_secs = {window:g} is longer than the '
                          f'{layout.example_secs:g} s examples of the dataset {source}; use '
                          f'--set data.example_secs={layout.example_secs:g} (or less) or '
                          'prepare longer examples (ddsp-prepare --example_secs)')
    frames = window * layout.frame_rate
    if abs(frames - round(frames)) > 1e-6:
        raise ConfigError(f'data.example_secs = {window:g} is not a whole number of frames at '
                          f"the dataset's {layout.frame_rate} frames/s; use a multiple of "
                          f'{1 / layout.frame_rate:g} s')
    data = dataclasses.replace(d, sample_rate=layout.sample_rate, frame_rate=layout.frame_rate,
                               record_secs=layout.example_secs, example_secs=window)
    return dataclasses.replace(config, data=data)
