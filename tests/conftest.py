import pytest
import torch

# One intra-op thread: tiny test models are overhead-bound, and a second thread only
# contends with the DDP subprocesses some tests start (measured ~3x slower with 2).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
