namespace Patterns.Transport;

/// <summary>
/// Topic names are dot-separated segments (<c>orders.eu.placed</c>). A pattern may use <c>*</c> for exactly one
/// segment and <c>#</c> for zero or more segments, as AMQP topic exchanges do.
/// </summary>
public static class TopicPattern
{
    /// <summary>Gets a value indicating whether <paramref name="pattern"/> contains wildcards.</summary>
    /// <param name="pattern">The pattern.</param>
    /// <returns><see langword="true"/> when it contains <c>*</c> or <c>#</c>.</returns>
    public static bool HasWildcards(string pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        return pattern.AsSpan().IndexOfAny('*', '#') >= 0;
    }

    /// <summary>Checks that a topic or pattern is well formed.</summary>
    /// <param name="pattern">The topic or pattern.</param>
    /// <param name="allowWildcards">Whether <c>*</c> and <c>#</c> are allowed.</param>
    /// <returns><see langword="null"/> when valid; otherwise what is wrong.</returns>
    public static string? Validate(string? pattern, bool allowWildcards)
    {
        if (string.IsNullOrWhiteSpace(pattern))
        {
            return "A topic must not be empty.";
        }

        foreach (var segment in pattern.Split('.'))
        {
            if (segment.Length == 0)
            {
                return $"Topic '{pattern}' has an empty segment; segments are separated by single dots.";
            }

            if (segment.AsSpan().IndexOfAny('*', '#') >= 0)
            {
                if (!allowWildcards)
                {
                    return $"Topic '{pattern}' contains a wildcard; wildcards are only allowed in subscriptions.";
                }

                if (segment.Length != 1)
                {
                    return $"Topic pattern '{pattern}' has segment '{segment}'; '*' and '#' must stand alone in a segment.";
                }
            }
        }

        return null;
    }

    /// <summary>Gets a value indicating whether <paramref name="topic"/> matches <paramref name="pattern"/>.</summary>
    /// <param name="pattern">The pattern, with optional <c>*</c> and <c>#</c> segments.</param>
    /// <param name="topic">The topic, without wildcards.</param>
    /// <returns><see langword="true"/> on a match.</returns>
    public static bool IsMatch(string pattern, string topic)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        ArgumentNullException.ThrowIfNull(topic);
        if (!HasWildcards(pattern))
        {
            return string.Equals(pattern, topic, StringComparison.Ordinal);
        }

        return Match(pattern.Split('.'), 0, topic.Split('.'), 0);
    }

    private static bool Match(string[] pattern, int p, string[] topic, int t)
    {
        while (p < pattern.Length)
        {
            var segment = pattern[p];
            if (segment == "#")
            {
                if (p == pattern.Length - 1)
                {
                    return true;
                }

                for (var skip = t; skip <= topic.Length; skip++)
                {
                    if (Match(pattern, p + 1, topic, skip))
                    {
                        return true;
                    }
                }

                return false;
            }

            if (t >= topic.Length)
            {
                return false;
            }

            if (segment != "*" && !string.Equals(segment, topic[t], StringComparison.Ordinal))
            {
                return false;
            }

            p++;
            t++;
        }

        return t == topic.Length;
    }
}
