using System.Globalization;
using System.Runtime.CompilerServices;
using nietras.SeparatedValues;

namespace Patterns.Etl;

/// <summary>
/// A CSV file read with Sep: the header is matched to the schema once, then each row is handed to the schema's create
/// function through <see cref="SepFieldReader"/>. The bookmark is the count of data rows consumed: a resumed run skips
/// that many rows (parsing only row boundaries) and goes on.
/// </summary>
internal sealed class CsvSource<T>(string path, EtlSchema<T> schema, Func<EtlFieldReader, T> create, CsvReadOptions options) : EtlSource<T>
{
    public override string Name => path;

    public override bool CanResume => true;

    public override async IAsyncEnumerable<T> ReadAsync(EtlSourceContext context, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
        await using var _ = stream.ConfigureAwait(false);
        context.Length = stream.Length;
        using var reader = Open(stream);
        var fields = new SepFieldReader(reader, Map(reader.Header), [.. schema.Columns.Select(c => c.Name)], options.EmptyIsNull);
        var skip = context.Resume.Offset;
        long offset = 0;
#pragma warning disable CA1849 // Sep reads a buffered file stream: a synchronous row read is faster than an awaited one, and blocks only on disk.
        while (reader.MoveNext())
#pragma warning restore CA1849
        {
            offset++;
            if (offset <= skip)
            {
                continue;
            }

            if ((offset & 1023) == 0)
            {
                context.BytesRead = stream.Position;
                cancellationToken.ThrowIfCancellationRequested();
            }

            context.Offset = offset;
            context.Line = reader.Current.LineNumberFrom;
            if (fields.TryCreate(create, out var record, out var column, out var error))
            {
                yield return record;
            }
            else
            {
                context.Quarantine(reader.Current.Span.ToString(), column, error!);
            }
        }

        context.BytesRead = stream.Length;
    }

    private SepReader Open(Stream stream) =>
        Sep.New(options.Separator).Reader(o => o with
        {
            Unescape = true,
            DisableColCountCheck = true,
            CultureInfo = CultureInfo.InvariantCulture,
            CreateToString = options.PoolStrings ? SepToString.PoolPerCol(maximumStringLength: 32) : SepToString.Direct,
        }).From(stream, leaveOpen: true);

    private int[] Map(SepReaderHeader header)
    {
        var columns = schema.Columns;
        var map = new int[columns.Count];
        var missing = new List<string>();
        for (var i = 0; i < columns.Count; i++)
        {
            if (!header.TryIndexOf(columns[i].Name, out map[i]))
            {
                missing.Add(columns[i].Name);
            }
        }

        return missing.Count == 0
            ? map
            : throw new InvalidDataException($"CSV file '{path}' has no column {string.Join(", ", missing.Select(m => $"'{m}'"))} (its header is {string.Join(",", header.ColNames)}).");
    }
}

/// <summary>The fields of the current Sep row, by schema ordinal; parse failures name the column.</summary>
internal sealed class SepFieldReader(SepReader reader, int[] map, IReadOnlyList<string> names, bool emptyIsNull) : EtlFieldReader
{
    private readonly IReadOnlyList<string> _names = names;
    private readonly int _maxIndex = map.Length == 0 ? -1 : map.Max();

    public bool TryCreate<T>(Func<EtlFieldReader, T> create, out T record, out string? column, out string? error)
    {
        var count = reader.Current.ColCount;
        if (count <= _maxIndex)
        {
            record = default!;
            column = null;
            error = $"The row has {count} fields; the header has {reader.Header.ColNames.Count}.";
            return false;
        }

        return EtlRecordFactory.TryCreate(create, this, out record, out column, out error);
    }

    public override int Int32(int ordinal) =>
        int.TryParse(Span(ordinal), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) ? value : throw Bad(ordinal, "an integer");

    public override long Int64(int ordinal) =>
        long.TryParse(Span(ordinal), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) ? value : throw Bad(ordinal, "a 64-bit integer");

    public override decimal Decimal(int ordinal) =>
        decimal.TryParse(Span(ordinal), NumberStyles.Number, CultureInfo.InvariantCulture, out var value) ? value : throw Bad(ordinal, "a decimal number");

    public override double Double(int ordinal) =>
        double.TryParse(Span(ordinal), NumberStyles.Float, CultureInfo.InvariantCulture, out var value) ? value : throw Bad(ordinal, "a number");

    public override bool Boolean(int ordinal)
    {
        var span = Span(ordinal);
        if (bool.TryParse(span, out var value))
        {
            return value;
        }

        return span is "1" ? true : span is "0" ? false : throw Bad(ordinal, "true or false");
    }

    public override DateTime DateTime(int ordinal) =>
        System.DateTime.TryParse(Span(ordinal), CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var value)
            ? value
            : throw Bad(ordinal, "a timestamp");

    public override string String(int ordinal) => reader.Current[map[ordinal]].ToString();

    public override Guid Guid(int ordinal) => System.Guid.TryParse(Span(ordinal), out var value) ? value : throw Bad(ordinal, "a GUID");

    public override bool IsNull(int ordinal) => emptyIsNull && reader.Current[map[ordinal]].Span.IsEmpty;

    private ReadOnlySpan<char> Span(int ordinal) => reader.Current[map[ordinal]].Span;

    private EtlFieldException Bad(int ordinal, string expected)
    {
        var text = reader.Current[map[ordinal]].ToString();
        if (text.Length > 64)
        {
            text = text[..64] + "…";
        }

        return new EtlFieldException($"Column '{_names[ordinal]}': '{text}' is not {expected}.") { Column = _names[ordinal] };
    }
}
