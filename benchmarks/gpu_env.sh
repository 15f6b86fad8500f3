# Sourced by the GPU benchmark scripts: run from the repository root with the Python of a device machine.
# Installs the carried wheels (.whl, see gpu_check.sh) into /tmp/site when they are there, and puts alnvid on the
# path either way.
PY=${PYTHON:-python3}
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
