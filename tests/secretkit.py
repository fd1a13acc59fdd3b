"""Planted secrets for the tests: made-up values with the shapes of real ones, and every form in
which a secret shows up (shared by the redaction, journal and end-to-end secret tests)."""
import json

# Made-up values with the shapes of real ones (none is a live credential).
OPENAI = "sk-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7cDE0fGH3iJK6l"
OPENAI_PROJECT = "sk-proj-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe_Dc-Ba9Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1"
ANTHROPIC = "sk-ant-api03-" + "Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz1Xc3Vb5Nm7Qw9Er1Ty3-Ui5Op7AA"
GITHUB = "ghp_" + "R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1234"
GITHUB_OAUTH = "gho_" + "0123456789abcdefABCDEF0123456789abcdef"
GITHUB_PAT = "github_pat_" + "11AAAAAAA0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789"
AWS_ID = "AKIA" + "Z7Q2X9W4V6T8R1P3"
AWS_STS_ID = "ASIA" + "Q9W8E7R6T5Y4U3I2"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ9r8s7t6u"
SLACK = "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_HOOK = "https://hooks.slack.com/services/" + "T0ABCDEFG/B0HIJKLMN/aBcDeFgHiJkLmNoPqRsTuVwX"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
PEM_BODY = "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n" \
           "7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFc\n" \
           "zGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE\n"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}-----END RSA PRIVATE KEY-----"
ENV_VALUE = "q7-Plum-Harbor-19x"
ENV = {"MY_SERVICE_TOKEN": ENV_VALUE, "GIT_AUTHOR_NAME": "Overnight Agent", "PATH": "/usr/bin:/bin",
       "SSH_AUTH_SOCK": "/run/user/0/agent.sock", "HOME": "/root", "SHORT_KEY": "abc"}

# (form, the secret that must disappear, the kind named in its place)
FORMS = [
    (f"key is {OPENAI} ok", OPENAI, "openai"),
    (f"OPENAI_API_KEY={OPENAI_PROJECT}", OPENAI_PROJECT, "openai"),
    (f'{{"anthropic": "{ANTHROPIC}"}}', ANTHROPIC, "anthropic"),
    (f"git push https://x-access-token:{GITHUB}@github.com/o/r.git", GITHUB, "github"),
    (f"token {GITHUB_OAUTH}", GITHUB_OAUTH, "github"),
    (f"'{GITHUB_PAT}'", GITHUB_PAT, "github"),
    (f"aws_access_key_id = {AWS_ID}", AWS_ID, "aws_access_key_id"),
    (f"export AWS_ACCESS_KEY_ID={AWS_STS_ID}", AWS_STS_ID, "aws_access_key_id"),
    (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET, "aws_secret_access_key"),
    (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', AWS_SECRET, "aws_secret_access_key"),
    (f"SLACK_BOT={SLACK}", SLACK, "slack"),
    (f"curl -X POST {SLACK_HOOK} -d @msg.json", SLACK_HOOK, "slack_webhook"),
    (f"curl -H 'Authorization: Bearer {JWT}' https://api.example.com", JWT, "authorization"),
    (f"Bearer {JWT}", JWT, "bearer"),
    ("db: password=Hunter2-sailboat next", "Hunter2-sailboat", "password"),
    ('passwd: "correct-horse-7"', "correct-horse-7", "password"),
    ('{"api_key": "k9x8c7v6b5n4", "user": "me"}', "k9x8c7v6b5n4", "api_key"),
    ("GET /callback?state=1&token=Zq81lmPaWx&next=/", "Zq81lmPaWx", "token"),
    ("client_secret='s3cr3t-Orchid-Lane'", "s3cr3t-Orchid-Lane", "secret"),
    ("https://deploy:Pa55w0rd-Xyz@git.example.com/repo.git", "Pa55w0rd-Xyz", "url_credentials"),
    (f"the service answered with {ENV_VALUE} today", ENV_VALUE, "env:MY_SERVICE_TOKEN"),
    (f"config:\n{PEM}\ndone", PEM_BODY.splitlines()[1], "private_key"),
    (json.dumps({"item": {"text": f"key:\n{PEM}\n"}}), PEM_BODY.splitlines()[0], "private_key"),
]
