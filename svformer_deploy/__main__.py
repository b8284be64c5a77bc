from svformer_deploy.cli import main

main()
