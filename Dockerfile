# The Airflow image of the Docker stack (docker-compose.yaml) and of the Helm chart (helm/): the
# official apache/airflow image of the pinned version plus this project's pinned requirements and
# the product only: include/ (the package and its SQL), dags/, plugins/. Development tooling
# (devtools/, tests/, bench/) stays out; docker-compose.yaml mounts ./devtools into the simulator.
# The project's package is on PYTHONPATH from /opt/airflow/include (copied here, and mounted over
# by docker-compose.yaml so that edits are picked up without a rebuild).
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}

ARG AIRFLOW_VERSION=3.3.2
USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/requirements/
# apache-airflow stays at the image's version; everything else as pinned for the local stack.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
      -r /opt/airflow/requirements/requirements.txt -c /opt/airflow/requirements/constraints.txt

COPY --chown=airflow:0 include /opt/airflow/include
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
ENV PYTHONPATH=/opt/airflow/include
