#!/usr/bin/env bash
# Build and deploy the Engage function binaries to AWS Lambda (see infra/aws/README.md).
#
#   infra/aws/lambda.sh build [fn...]     cargo lambda build --release --arm64 --features lambda
#                                         (default: every function binary) -> target/lambda/<fn>/bootstrap
#   infra/aws/lambda.sh template          print the SAM template (generated from the binaries)
#   infra/aws/lambda.sh deploy            sam deploy of that template; needs the parameters below
#   infra/aws/lambda.sh deploy-cli fn     plain AWS CLI alternative for one function (no SAM)
#
# Deploy parameters come from the environment: STACK (default engage), SECRET_ARN,
# DATABASE_URL, REDIS_URL, VOICE_REDIS_URL (optional), SUBNET_IDS, SECURITY_GROUP_IDS
# (comma-separated), PUBLIC_FUNCTION_URLS (true|false), and for deploy-cli ROLE_ARN.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

functions() { python3 "$here/gen-template.py" --names; }

build() {
  local fns=("$@")
  [ ${#fns[@]} -gt 0 ] || mapfile -t fns < <(functions)
  local args=()
  for f in "${fns[@]}"; do args+=(--bin "$f"); done
  cargo lambda build --release --arm64 -p engage-functions --features lambda "${args[@]}"
  for f in "${fns[@]}"; do ls -l "target/lambda/$f/bootstrap"; done
}

need() { for v in "$@"; do [ -n "${!v:-}" ] || { echo "lambda.sh: set $v" >&2; exit 2; }; done; }

case ${1:-} in
  build) shift; build "$@" ;;
  template) python3 "$here/gen-template.py" ;;
  deploy)
    need SECRET_ARN DATABASE_URL REDIS_URL SUBNET_IDS SECURITY_GROUP_IDS
    python3 "$here/gen-template.py" > "$here/template.generated.json"
    sam deploy --template-file "$here/template.generated.json" \
      --stack-name "${STACK:-engage}" --capabilities CAPABILITY_IAM --resolve-s3 \
      --parameter-overrides \
        "SecretArn=$SECRET_ARN" "DatabaseUrl=$DATABASE_URL" "RedisUrl=$REDIS_URL" \
        "VoiceRedisUrl=${VOICE_REDIS_URL:-}" "SubnetIds=$SUBNET_IDS" \
        "SecurityGroupIds=$SECURITY_GROUP_IDS" "PublicFunctionUrls=${PUBLIC_FUNCTION_URLS:-false}"
    ;;
  deploy-cli)
    fn=${2:?function name}
    need ROLE_ARN SECRET_ARN DATABASE_URL REDIS_URL SUBNET_IDS SECURITY_GROUP_IDS
    zip -j -q "target/lambda/$fn/bootstrap.zip" "target/lambda/$fn/bootstrap"
    name="${STACK:-engage}-$fn"
    env="Variables={AWS_SECRETS_ID=$SECRET_ARN,DATABASE_URL=$DATABASE_URL,REDIS_URL=$REDIS_URL,DB_POOL_SIZE=2,LOG_FORMAT=json}"
    if aws lambda get-function --function-name "$name" >/dev/null 2>&1; then
      aws lambda update-function-code --function-name "$name" --zip-file "fileb://target/lambda/$fn/bootstrap.zip"
      aws lambda wait function-updated --function-name "$name"
      aws lambda update-function-configuration --function-name "$name" --environment "$env"
    else
      aws lambda create-function --function-name "$name" --runtime provided.al2023 \
        --architectures arm64 --handler bootstrap --memory-size 256 --timeout 20 \
        --role "$ROLE_ARN" --zip-file "fileb://target/lambda/$fn/bootstrap.zip" \
        --vpc-config "SubnetIds=$SUBNET_IDS,SecurityGroupIds=$SECURITY_GROUP_IDS" \
        --environment "$env"
      aws lambda wait function-active --function-name "$name"
      aws lambda create-function-url-config --function-name "$name" --auth-type AWS_IAM
    fi
    ;;
  *) sed -n "2,14p" "$here/lambda.sh"; exit 2 ;;
esac
