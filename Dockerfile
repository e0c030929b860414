# TF Serving image with a keras-deeplab export. Build after `keras-deeplab export --out export/deeplab`:
#   docker build -t deeplab-serving .
#   docker run --rm -p 8501:8501 deeplab-serving
# then `keras-deeplab client --url http://127.0.0.1:8501 --name deeplab IMAGE... --out DIR`.
# GPU: docker build --build-arg TF_SERVING_TAG=2.21.0-gpu ... and docker run --gpus all ...
ARG TF_SERVING_TAG=2.21.0
FROM tensorflow/serving:${TF_SERVING_TAG}

COPY export/deeplab /models/deeplab
COPY serving/config/models.config /models/models.config
COPY serving/config/batching_parameters.txt /models/batching_parameters.txt

# 8500: gRPC, 8501: REST.
EXPOSE 8500 8501

ENTRYPOINT ["tensorflow_model_server", "--port=8500", "--rest_api_port=8501", \
            "--model_config_file=/models/models.config", \
            "--enable_batching=true", "--batching_parameters_file=/models/batching_parameters.txt"]
