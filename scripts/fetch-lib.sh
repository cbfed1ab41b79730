# Sourced by scripts/setup.sh and models/fetch.sh.
# fetch FILE SHA256 SHARED_FILE URL: puts FILE in place from SHARED_FILE when it exists (the
# team's ../shared), else downloads URL; checks sha256 either way; does nothing when FILE is
# already there and intact.
fetch() {
    local file=$1 sum=$2 shared=$3 url=$4
    if [ -f "$file" ] && echo "$sum  $file" | sha256sum -c --status; then
        return 0
    fi
    mkdir -p "$(dirname "$file")"
    if [ -f "$shared" ]; then
        cp "$shared" "$file.part"
    else
        echo "fetch: downloading $url"
        curl -fsSL --retry 3 -o "$file.part" "$url"
    fi
    chmod 644 "$file.part"
    if ! echo "$sum  $file.part" | sha256sum -c --status; then
        rm -f "$file.part"
        echo "fetch: $file: checksum mismatch (wanted $sum); not installed" >&2
        exit 1
    fi
    mv "$file.part" "$file"
    echo "fetch: $file ok"
}
