"""Build of the C codec accelerator; all other metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "contactsync.wire._phpform_c",
            sources=["src/contactsync/wire/_phpform_c.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wconversion", "-Wno-sign-conversion"],
            optional=False,
        )
    ]
)
