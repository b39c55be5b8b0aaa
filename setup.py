"""Build the optional C accelerator; all other metadata lives in pyproject.toml.

``optional=True``: without a compiler (or Python headers) the build warns and the
package installs as pure Python, which is the documented fallback.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cachewise._speedups",
            sources=[
                "src/cachewise/_speedups.c",
                "src/cachewise/_misspath.c",
                "src/cachewise/_wtinylfu.c",
                "src/cachewise/_policies.c",
                "src/cachewise/_duel.c",
            ],
            depends=["src/cachewise/_odict.h"],
            optional=True,
        )
    ]
)
