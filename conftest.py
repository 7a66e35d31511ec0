# In-repo runs load the plugin from the source tree; an installed llmconform registers it through pytest11.
import importlib.metadata

try:
    importlib.metadata.distribution("llmconform")
except importlib.metadata.PackageNotFoundError:
    pytest_plugins = ["llmconform.pytest.plugin"]
