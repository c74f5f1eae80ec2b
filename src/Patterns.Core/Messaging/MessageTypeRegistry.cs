using System.Collections.Concurrent;

namespace Patterns.Messaging;

/// <summary>
/// Maps message CLR types to logical names and back. A name comes from
/// <see cref="MessageNameAttribute"/> when present, and from the type's full name otherwise.
/// </summary>
/// <remarks>Thread-safe. Every type with a registered handler or subscription is registered at start-up.</remarks>
public sealed class MessageTypeRegistry
{
    private readonly ConcurrentDictionary<Type, NameEntry> _names = new();
    private volatile NameEntry? _last;
    private readonly ConcurrentDictionary<string, Type> _types = new(StringComparer.Ordinal);

    /// <summary>Gets the logical name of <typeparamref name="T"/>, registering it on first use.</summary>
    /// <typeparam name="T">The message type.</typeparam>
    /// <returns>The logical name.</returns>
    public string GetName<T>() => GetName(typeof(T));

    /// <summary>Gets the logical name of a message type, registering it on first use.</summary>
    /// <param name="type">The message type.</param>
    /// <returns>The logical name.</returns>
    /// <exception cref="InvalidOperationException">Another type is already registered under the same name.</exception>
    public string GetName(Type type)
    {
        ArgumentNullException.ThrowIfNull(type);
        if (_last is { } last && last.Type == type)
        {
            return last.Name;
        }

        if (_names.TryGetValue(type, out var entry))
        {
            _last = entry;
            return entry.Name;
        }

        return Register(type, DefaultName(type));
    }

    /// <summary>Registers a message type under a logical name.</summary>
    /// <param name="type">The message type.</param>
    /// <param name="name">The logical name.</param>
    /// <returns>The name.</returns>
    /// <exception cref="InvalidOperationException">The name is taken by another type, or the type has another name.</exception>
    public string Register(Type type, string name)
    {
        ArgumentNullException.ThrowIfNull(type);
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var existingType = _types.GetOrAdd(name, type);
        if (existingType != type)
        {
            throw new InvalidOperationException(
                $"Message name '{name}' is already registered for type '{existingType.FullName}', so it cannot also name '{type.FullName}'. Give one of them a distinct [MessageName].");
        }

        var existingName = _names.GetOrAdd(type, static (t, n) => new NameEntry(t, n), name).Name;
        if (!string.Equals(existingName, name, StringComparison.Ordinal))
        {
            throw new InvalidOperationException(
                $"Message type '{type.FullName}' is already registered as '{existingName}', so it cannot also be registered as '{name}'.");
        }

        return name;
    }

    /// <summary>Finds the type registered under a logical name.</summary>
    /// <param name="name">The logical name.</param>
    /// <param name="type">The type, when found.</param>
    /// <returns><see langword="true"/> when a type is registered under <paramref name="name"/>.</returns>
    public bool TryGetType(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Type? type)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _types.TryGetValue(name, out type);
    }

    private static string DefaultName(Type type) => MessageTypeNames.Default(type);

    private sealed record NameEntry(Type Type, string Name);
}
