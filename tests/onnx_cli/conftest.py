"""Keep Ultralytics offline and its settings out of the repository and the home directory (before any import)."""
import os
import tempfile

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "normfold-tests-ultralytics"))
