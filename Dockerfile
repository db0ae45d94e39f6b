# syntax=docker/dockerfile:1
# The application image: the mlops package, for the prediction/control API and the Streamlit UI.
#   docker build -t mlops .
#   docker run -p 8000:8000 --env-file .env mlops                       # API (default command)
#   docker run -p 8501:8501 --env-file .env mlops mlops ui --port 8501  # UI
# docker-compose.yml runs both services from this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY mlops_cli/ mlops_cli/
COPY streamlit_app/ streamlit_app/
RUN pip install --no-cache-dir .

# The migrations and the crontab template are package data (inside the installed package);
# streamlit_app/ is run from its copy under /app.
ENV MLOPS_HOME=/home/mlops/.mlops \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin mlops \
    && mkdir -p /home/mlops/.mlops \
    && chown -R mlops:mlops /home/mlops
USER mlops
WORKDIR /home/mlops

EXPOSE 8000 8501
# The API's /health (the UI service overrides this healthcheck in docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["mlops", "serve", "--host", "0.0.0.0", "--port", "8000"]
