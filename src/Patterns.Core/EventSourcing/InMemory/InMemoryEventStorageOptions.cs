using System.ComponentModel.DataAnnotations;

namespace Patterns.EventSourcing.InMemory;

/// <summary>Options for <see cref="InMemoryEventStorage"/>.</summary>
public sealed class InMemoryEventStorageOptions
{
    /// <summary>Gets or sets how many events or documents a read copies out of the store at a time.</summary>
    /// <value>Default 512. Reads never hold the store's lock while the caller consumes a page.</value>
    [Range(1, 1_000_000)]
    public int PageSize { get; set; } = 512;
}
