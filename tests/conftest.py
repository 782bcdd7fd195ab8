import shutil

import open_clip
import pytest
import torch

import centerclip.model.openclip  # noqa: F401  (registers our model configs with open_clip)


@pytest.fixture(scope="session")
def tiny_clip():
    """The tiny random-weight CLIP of centerclip-test: 32 px frames, 4x4 = 16 patches, 4 blocks."""
    torch.manual_seed(0)
    return open_clip.create_model("centerclip-test").eval()


@pytest.fixture
def frames():
    """Two videos of 6 frames at 32 px, frames of a video correlated like real footage."""
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(2, 1, 3, 32, 32, generator=generator)
    return base + 0.3 * torch.randn(2, 6, 3, 32, 32, generator=generator)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (a start costs ~10 s)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory):
    """A 20-video synthetic benchmark at 32 px (the test model's size), generated once."""
    from centerclip.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, 20, seed=0, size=32)
    return root


# A headless Chromium for the page's tests (tests/test_serve.py, tests/test_serve_hostile.py).
BROWSER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not all(BROWSER):
        pytest.skip("needs the Debian packages chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER[0]
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(BROWSER[1]))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
