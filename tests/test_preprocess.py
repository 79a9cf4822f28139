"""Streaming preprocessing equals whole-signal processing, and the filters do what they say."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.signal

from eegfm.ingest.preprocess import (
    PreprocessConfig,
    SegmentPipeline,
    StreamingFIR,
    design_fir,
    notch_frequencies,
    preprocess_hash,
)


def _run(x: np.ndarray, fs: float, chunk: int) -> np.ndarray:
    pipeline = SegmentPipeline(PreprocessConfig(), fs, x.shape[1], mains_hz=60.0)
    parts = [pipeline.push(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    return np.concatenate([*parts, pipeline.flush()], axis=1).T


@pytest.mark.parametrize("fs", [128.0, 200.0, 250.0, 256.0, 512.0])
def test_chunked_equals_whole(fs: float) -> None:
    rng = np.random.default_rng(0)
    n = int(fs * 120)
    x = (np.cumsum(rng.standard_normal((n, 4)), axis=0) + 20 * rng.standard_normal((n, 4))).astype(np.float32)
    whole = _run(x, fs, n)
    assert len(whole) == round(n * 200 / fs)
    scale = np.abs(whole).max()
    for chunk in (997, int(fs * 7), int(fs * 50)):
        np.testing.assert_allclose(_run(x, fs, chunk), whole, rtol=0, atol=1e-4 * scale)


def test_fir_is_zero_phase_convolution_with_reflected_edges() -> None:
    rng = np.random.default_rng(1)
    kernel = design_fir(200.0, 0.1, 75.0, (60.0,), 1.0)
    half = (len(kernel) - 1) // 2
    x = rng.standard_normal((2, 30_000)).astype(np.float32)
    fir = StreamingFIR(kernel, 2)
    y = np.concatenate([fir.push(x[:, :4_000]), fir.push(x[:, 4_000:]), fir.flush()], axis=1)
    oracle = np.stack(
        [np.convolve(np.pad(row.astype(float), half, mode="reflect"), kernel, mode="valid") for row in x]
    )
    np.testing.assert_allclose(y, oracle, atol=1e-4)


def test_segment_shorter_than_the_kernel_still_filters() -> None:
    x = np.random.default_rng(2).standard_normal((500, 3)).astype(np.float32)
    assert _run(x, 200.0, 100).shape == (500, 3)


def test_frequency_response() -> None:
    kernel = design_fir(200.0, 0.1, 75.0, notch_frequencies(60.0, 200.0, 75.0), 1.0)
    assert np.allclose(kernel, kernel[::-1])  # symmetric: linear phase, zero phase once delay-compensated
    freqs, h = scipy.signal.freqz(kernel, worN=2**16, fs=200.0)
    gain = np.abs(h)

    def at(f: float) -> float:
        return float(gain[np.argmin(np.abs(freqs - f))])

    for f in (1.0, 10.0, 30.0, 50.0, 70.0):
        assert abs(at(f) - 1) < 0.02, f
    assert at(60.0) < 10 ** (-40 / 20)  # notch
    assert at(0.0) < 0.01  # high-pass removes DC
    assert at(95.0) < 10 ** (-40 / 20)  # low-pass


def test_notch_frequencies_stop_below_the_low_pass() -> None:
    assert notch_frequencies(50.0, 200.0, 75.0) == (50.0,)
    assert notch_frequencies(60.0, 1000.0, None) == tuple(float(f) for f in range(60, 499, 60))


def test_hash_tracks_what_changes_the_samples() -> None:
    base = PreprocessConfig()
    assert preprocess_hash(base, 60) == preprocess_hash(PreprocessConfig(), 60)
    assert preprocess_hash(base, 60) != preprocess_hash(base, 50)
    assert preprocess_hash(base, 60) != preprocess_hash(dataclasses.replace(base, h_freq=40.0), 60)
    assert preprocess_hash(base, 60) == preprocess_hash(dataclasses.replace(base, chunk_s=17.0), 60)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="dtype"):
        PreprocessConfig(dtype="int8")
