"""What every config section shares: strict fields, one error type, located errors."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from drivelab.errors import DrivelabError


class ConfigError(DrivelabError):
    """A user mistake in a config file or override; the message is one line naming the key.

    A `DrivelabError` (itself a ValueError), so the command line prints it as one line.
    """


def _field_error(field: str, message: str) -> PydanticCustomError:
    """An error from a model validator, located at one of the model's own fields."""
    return PydanticCustomError("located", "{message}", {"path": [field], "message": message})


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
#: A training seed: numpy's legacy seeding (and its worker seeds) takes 0 <= seed < 2**32, and a
#: negative one would fail deep inside training or Ray; checked once, here, for train and sweep.
Seed = Annotated[int, Field(ge=0, lt=2**32)]

#: Families of head widths: an explicit list, or Charles's "each layer a quarter of the previous".
class _Section(BaseModel):
    """Base of every config section: unknown keys are errors, with a close-name suggestion.

    ``extra="forbid"`` alone would reject the key; the before-validator runs first so the message
    can say which names exist and which one the user probably meant.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key {key}",
                        {
                            "key": str(key),
                            "allowed": allowed,
                            "suggestion": close[0] if close else "",
                        },
                    )
        return data


