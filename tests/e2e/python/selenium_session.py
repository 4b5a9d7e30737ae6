"""Headless Chromium through the farm grid with the official Selenium client: load a page, read its title.

usage: selenium_session.py GRID_URL PAGE_URL
Prints "TITLE <title>".
"""
import sys

from selenium import webdriver

url, page = sys.argv[1], sys.argv[2]
options = webdriver.ChromeOptions()
for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]:
    options.add_argument(flag)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Remote(command_executor=url, options=options)
try:
    driver.get(page)
    print(f"TITLE {driver.title}", flush=True)
finally:
    driver.quit()
