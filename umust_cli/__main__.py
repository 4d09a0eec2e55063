from umust_cli.cli.main import app

if __name__ == "__main__":
    app(prog_name="umust")  # the same command, named as installed (its usage errors say 'umust ...')
