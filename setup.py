"Packaging for babycry, driven by settings.ini (the nbdev 2 layout, without pkg_resources)."
from configparser import ConfigParser
import setuptools, shlex

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

expected = 'version description keywords author author_email license git_url lib_name min_python'.split()
missing = [o for o in expected if o not in cfg]
assert not missing, f"settings.ini is missing: {missing}"

licenses = {
    'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License'),
    'mit': ('MIT License', 'OSI Approved :: MIT License'),
}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.9 3.10 3.11 3.12 3.13'.split()

lic = licenses.get(cfg['license'].lower(), (cfg['license'], None))
min_python = cfg['min_python']
requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
console_scripts = cfg.get('console_scripts', '').split()

def _version_key(v): return tuple(int(x) for x in v.split('.'))

from setuptools.command.build_py import build_py
from pathlib import Path
import shutil

class build_py_with_notebooks(build_py):
    "Ship the stage notebooks (settings.ini's stage_notebooks) inside the package (babycry/nbs/), so babycry-run works from a wheel too."
    def run(self):
        super().run()
        dest, src = Path(self.build_lib)/cfg['lib_path']/'nbs', Path(cfg.get('nbs_path', 'nbs'))
        dest.mkdir(parents=True, exist_ok=True)
        for nb in cfg['stage_notebooks'].split(): shutil.copy2(src/f'{nb}.ipynb', dest/f'{nb}.ipynb')

setuptools.setup(
    name=cfg['lib_name'],
    license=lic[0],
    classifiers=[
        'Development Status :: ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
        'Topic :: Multimedia :: Sound/Audio :: Analysis',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ] + ['Programming Language :: Python :: ' + o for o in py_versions if _version_key(o) >= _version_key(min_python)]
      + (['License :: ' + lic[1]] if lic[1] else []),
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['babycry', 'babycry.*']),
    include_package_data=True,
    package_data={cfg['lib_name']: ['model_card.md']},
    install_requires=requirements,
    extras_require={'dev': dev_requirements, 'onnx': shlex.split(cfg.get('onnx_requirements', '')),
                    'fast': shlex.split(cfg.get('onnx_requirements', ''))},   # 'fast': the extra's earlier name
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    cmdclass={'build_py': build_py_with_notebooks},
    entry_points={
        'console_scripts': console_scripts,
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d'],
    },
    author=cfg['author'], author_email=cfg['author_email'],
    description=cfg['description'], keywords=cfg['keywords'],
    version=cfg['version'],
)
