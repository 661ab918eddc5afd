from brain_tumor.cli import app

app()
