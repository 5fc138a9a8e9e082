"""da: two-stage domain adaptation for remote-sensing scene classification."""

__version__ = "0.1.0"

# The registries declare their methods' and validators' settings and their names' checks (da.settings) when
# imported: importing them here gives every user of the package the complete config (RunConfig's fields, flags,
# checks, hash) at once, while the config layer imports none of them.
from da import methods as _methods  # noqa: E402,F401  (imported for their registrations)
from da import prior as _prior  # noqa: E402,F401
from da import selection as _selection  # noqa: E402,F401
from da.data import registry as _datasets  # noqa: E402,F401
