//! A minimal reader of SentencePiece's `ModelProto` (protobuf wire format), for the
//! parts the conversion needs.

use super::{token_type, tokenizer_error};
use crate::error::{Error, Result};

/// `TrainerSpec.model_type` of a BPE model.
pub(super) const SP_MODEL_TYPE_BPE: u64 = 2;

/// The parts of a SentencePiece `ModelProto` the conversion needs.
pub(super) struct SentencePieceModel {
    pub(super) pieces: Vec<String>,
    pub(super) scores: Vec<f32>,
    pub(super) types: Vec<i32>,
    pub(super) model_type: u64,
    pub(super) byte_fallback: bool,
    pub(super) treat_whitespace_as_suffix: bool,
    pub(super) unk_id: i32,
    pub(super) bos_id: i32,
    pub(super) eos_id: i32,
    pub(super) normalizer: NormalizerSpec,
}

/// SentencePiece's `NormalizerSpec`, with its protobuf defaults.
pub(super) struct NormalizerSpec {
    pub(super) precompiled_charsmap: Vec<u8>,
    pub(super) add_dummy_prefix: bool,
    pub(super) remove_extra_whitespaces: bool,
    pub(super) escape_whitespaces: bool,
}

impl SentencePieceModel {
    /// Reads a serialized `ModelProto` (sentencepiece_model.proto field numbers).
    pub(super) fn parse(bytes: &[u8]) -> Result<Self> {
        let mut model = Self {
            pieces: Vec::new(),
            scores: Vec::new(),
            types: Vec::new(),
            model_type: 1,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            normalizer: NormalizerSpec {
                precompiled_charsmap: Vec::new(),
                add_dummy_prefix: true,
                remove_extra_whitespaces: true,
                escape_whitespaces: true,
            },
        };
        let mut reader = ProtoReader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
            match (field, value) {
                (1, ProtoValue::Bytes(piece)) => {
                    let (text, score, kind) = parse_piece(piece)?;
                    model.pieces.push(text);
                    model.scores.push(score);
                    model.types.push(kind);
                }
                (2, ProtoValue::Bytes(trainer)) => model.read_trainer_spec(trainer)?,
                (3, ProtoValue::Bytes(normalizer)) => model.read_normalizer_spec(normalizer)?,
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err(tokenizer_error(
                "SentencePiece model has no pieces (is this a tokenizer.model file?)".into(),
            ));
        }
        Ok(model)
    }

    fn read_trainer_spec(&mut self, bytes: &[u8]) -> Result<()> {
        let mut reader = ProtoReader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
            if let ProtoValue::Varint(v) = value {
                match field {
                    3 => self.model_type = v,
                    24 => self.treat_whitespace_as_suffix = v != 0,
                    35 => self.byte_fallback = v != 0,
                    40 => self.unk_id = v as i32,
                    41 => self.bos_id = v as i32,
                    42 => self.eos_id = v as i32,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn read_normalizer_spec(&mut self, bytes: &[u8]) -> Result<()> {
        let mut reader = ProtoReader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
            match (field, value) {
                (2, ProtoValue::Bytes(map)) => self.normalizer.precompiled_charsmap = map.to_vec(),
                (3, ProtoValue::Varint(v)) => self.normalizer.add_dummy_prefix = v != 0,
                (4, ProtoValue::Varint(v)) => self.normalizer.remove_extra_whitespaces = v != 0,
                (5, ProtoValue::Varint(v)) => self.normalizer.escape_whitespaces = v != 0,
                _ => {}
            }
        }
        Ok(())
    }
}

/// One `ModelProto.SentencePiece`: (piece, score, type).
fn parse_piece(bytes: &[u8]) -> Result<(String, f32, i32)> {
    let (mut text, mut score, mut kind) = (None, 0.0, token_type::NORMAL);
    let mut reader = ProtoReader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (1, ProtoValue::Bytes(piece)) => {
                text = Some(
                    String::from_utf8(piece.to_vec())
                        .map_err(|_| proto_error("a piece is not UTF-8"))?,
                )
            }
            (2, ProtoValue::Fixed32(bits)) => score = f32::from_bits(bits),
            (3, ProtoValue::Varint(v)) => kind = v as i32,
            _ => {}
        }
    }
    Ok((
        text.ok_or_else(|| proto_error("a piece has no text"))?,
        score,
        kind,
    ))
}

fn proto_error(what: &str) -> Error {
    tokenizer_error(format!("SentencePiece model is malformed: {what}"))
}

/// One protobuf field value, by wire type.
enum ProtoValue<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A minimal protobuf wire-format reader: fields in order, nested messages as bytes.
struct ProtoReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> ProtoReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.position)
                .ok_or_else(|| proto_error("truncated varint"))?;
            self.position += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(proto_error("varint longer than 10 bytes"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self
            .position
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| proto_error("a field runs past the end of its message"))?;
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    /// The next (field number, value), or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, ProtoValue<'a>)>> {
        if self.position == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => ProtoValue::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                ProtoValue::Fixed64
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| proto_error("length too large"))?;
                ProtoValue::Bytes(self.take(len)?)
            }
            5 => {
                let bytes = self.take(4)?;
                ProtoValue::Fixed32(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            }
            wire => return Err(proto_error(&format!("unsupported wire type {wire}"))),
        };
        Ok(Some((key >> 3, value)))
    }
}
