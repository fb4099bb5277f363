#include "run/catalogue.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <toml++/toml.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

namespace blkrig::run {

const CatalogueKernel* Catalogue::find(std::string_view name) const {
    for (const auto& k : kernels)
        if (k.name == name) return &k;
    return nullptr;
}

std::string Catalogue::names() const {
    std::vector<std::string> n;
    for (const auto& k : kernels) n.push_back(k.name);
    return fmt::format("{}", fmt::join(n, " "));
}

namespace {

std::string where(const std::string& source, const toml::source_region& r) {
    return r.begin.line ? fmt::format("{}:{}", source, r.begin.line) : source;
}

std::string need_string(const toml::table& t, std::string_view key, const std::string& at) {
    const auto* node = t.get(key);
    if (!node) throw CatalogueError(fmt::format("{}: missing {}", at, key));
    const auto* s = node->as_string();
    if (!s || s->get().empty()) throw CatalogueError(fmt::format("{}: {} must be a non-empty string", at, key));
    return s->get();
}

}  // namespace

Catalogue parse_catalogue(std::string_view text, const std::string& source) {
    toml::table root;
    try {
        root = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
        throw CatalogueError(fmt::format("{}:{}: {}", source, e.source().begin.line, e.description()));
    }
    static const std::set<std::string_view> kTop = {"default", "kernel"};
    static const std::set<std::string_view> kKernel = {"name", "summary", "suite", "package"};
    for (const auto& [k, v] : root)
        if (!kTop.count(k.str())) throw CatalogueError(fmt::format("{}: unknown key {}", where(source, v.source()), k.str()));
    Catalogue c;
    c.default_name = need_string(root, "default", source);
    const auto* list = root.get_as<toml::array>("kernel");
    if (!list || list->empty()) throw CatalogueError(fmt::format("{}: no [[kernel]] entries", source));
    for (const auto& node : *list) {
        const auto* t = node.as_table();
        const std::string at = where(source, node.source());
        if (!t) throw CatalogueError(fmt::format("{}: [[kernel]] must be a table", at));
        for (const auto& [k, v] : *t)
            if (!kKernel.count(k.str())) throw CatalogueError(fmt::format("{}: unknown key kernel.{}", where(source, v.source()), k.str()));
        CatalogueKernel k{need_string(*t, "name", at), need_string(*t, "summary", at), need_string(*t, "suite", at),
                          need_string(*t, "package", at)};
        // Names become folder names in the cache and pytest ids.
        if (k.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-") != std::string::npos)
            throw CatalogueError(fmt::format("{}: kernel name '{}' may hold only a-z, 0-9, '.' and '-'", at, k.name));
        if (c.find(k.name)) throw CatalogueError(fmt::format("{}: kernel '{}' is listed twice", at, k.name));
        c.kernels.push_back(std::move(k));
    }
    if (!c.find(c.default_name))
        throw CatalogueError(fmt::format("{}: default '{}' is not a listed kernel ({})", source, c.default_name, c.names()));
    return c;
}

std::filesystem::path catalogue_path() {
    const char* d = std::getenv("BLKRIG_SOURCE_DIR");
    return std::filesystem::path(d && *d ? d : BLKRIG_SOURCE_DIR) / "guest-driver" / "kernels" / "catalogue.toml";
}

const Catalogue& catalogue() {
    static const Catalogue c = [] {
        const auto path = catalogue_path();
        std::ifstream in(path);
        if (!in) throw CatalogueError(fmt::format("cannot read the kernel catalogue {}", path.string()));
        std::ostringstream s;
        s << in.rdbuf();
        return parse_catalogue(s.str(), path.string());
    }();
    return c;
}

}  // namespace blkrig::run
